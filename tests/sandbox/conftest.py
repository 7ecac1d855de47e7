"""Fixtures for the sandbox tests: real runsc and bwrap, one private temp root per session,
and a leftover check (no container state, processes, mounts, cgroups or bundles).

The gVisor sandbox needs root, runsc and cgroup v1 (the machine and CI provide them); a
missing part fails the tests with the reason instead of skipping them.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sandbox_helpers import assert_no_leftovers

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox import Limits, SandboxResult, get_sandbox
from clowder_ml.sandbox.base import Sandbox
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.settings import Settings

RunPy = Callable[..., SandboxResult]


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox-root")
    os.chmod(root, 0o700)
    return root


@pytest.fixture(scope="session")
def sandbox_settings(sandbox_root: Path) -> Settings:
    return Settings(sandbox_tmp_dir=sandbox_root / "tmp",
                    sandbox_state_dir=sandbox_root / "runsc-state")


@pytest.fixture(scope="session")
def gvisor(sandbox_settings: Settings) -> Iterator[RunscSandbox]:
    try:
        sb = get_sandbox(sandbox_settings)
    except SandboxUnavailable as exc:  # pragma: no cover - a broken machine, not a result
        pytest.fail(f"gVisor sandbox is required for these tests: {exc}")
    assert isinstance(sb, RunscSandbox)
    yield sb
    # Session end: whatever ran, nothing may be left behind.
    assert_no_leftovers(sb)


@pytest.fixture(scope="session")
def bwrap(sandbox_settings: Settings) -> Sandbox:
    try:
        return get_sandbox(sandbox_settings.model_copy(update={"sandbox_backend": "bubblewrap"}))
    except SandboxUnavailable as exc:  # pragma: no cover
        pytest.fail(f"bubblewrap is required for these tests: {exc}")


def _runner(sb: Sandbox, tmp_path: Path) -> RunPy:
    def run_py(code: str, **kwargs: object) -> SandboxResult:
        limit_args = {k: kwargs.pop(k) for k in list(kwargs) if k in Limits.__dataclass_fields__}
        path = tmp_path / "prog.py"
        path.write_text(textwrap.dedent(code))
        return sb.run_python(path, limits=Limits().with_(**limit_args), **kwargs)

    return run_py


@pytest.fixture
def run_py(gvisor: RunscSandbox, tmp_path: Path) -> RunPy:
    """Run Python source in gVisor; limit fields (wall_s=2, memory_bytes="256M") and
    :meth:`Sandbox.run` keywords may be passed."""
    return _runner(gvisor, tmp_path)


@pytest.fixture
def run_bwrap(bwrap: Sandbox, tmp_path: Path) -> RunPy:
    return _runner(bwrap, tmp_path)
