"""Run untrusted code: gVisor (``runsc run`` on a per-run OCI bundle) with host-enforced
limits, or, only when an operator configures it, the weaker bubblewrap backend.

>>> sb = get_sandbox(Settings())
>>> res = sb.run_python(Path("job.py"), input_dir=Path("inputs"), limits=Limits(wall_s=30))
>>> res.verdict, res.exit_code, res.stdout, res.usage, res.isolation

Streaming (:meth:`Sandbox.start` -> :class:`SandboxProcess`, stdin/stdout pipes to the
host) underlies running user Python: :func:`~clowder_ml.sandbox.usercode.evaluate_config`
(a ``config.py``'s ``CONFIG``, back as JSON only), :func:`~clowder_ml.sandbox.usercode.apply`
(a user function over a record stream) and :class:`~clowder_ml.sandbox.pool.WarmPool`, all
over the agent protocol (:mod:`~clowder_ml.sandbox.agent_client` on the host,
:mod:`~clowder_ml.sandbox.agent` inside the sandbox). ``usercode`` imports this package
(for ``get_sandbox``); this package imports none of those modules, even lazily.

Contract inside the sandbox: ``/data`` is the input (read-only), ``/work`` the private
writable work folder and working directory, ``/code`` the staged code (read-only); uid/gid
65534; no network; the environment is only what the caller passes plus a minimal base.
"""

from __future__ import annotations

from clowder_ml.sandbox.base import Sandbox, SandboxProcess
from clowder_ml.sandbox.collect import Collected, collect, safe_relpath
from clowder_ml.sandbox.limits import Limits, format_size, parse_size
from clowder_ml.sandbox.result import BUBBLEWRAP_WEAKER, GVISOR, SandboxResult, Usage, Verdict
from clowder_ml.settings import Settings

__all__ = [
    "BUBBLEWRAP_WEAKER", "GVISOR", "Collected", "Limits", "Sandbox", "SandboxProcess",
    "SandboxResult", "Usage", "Verdict", "collect", "format_size", "get_sandbox", "parse_size",
    "safe_relpath",
]


def get_sandbox(settings: Settings | None = None) -> Sandbox:
    """The configured sandbox backend.

    gVisor unless ``sandbox_backend`` is explicitly ``"bubblewrap"``. Raises
    :class:`~clowder_ml.errors.SandboxUnavailable` when the configured backend is missing or
    unusable; there is never a fallback to another backend or to no sandbox.
    """
    settings = settings or Settings()
    if settings.sandbox_backend == "bubblewrap":
        from clowder_ml.sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(settings)
    from clowder_ml.sandbox.gvisor import RunscSandbox

    return RunscSandbox(settings)
