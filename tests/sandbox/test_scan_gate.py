"""The pre-run scan gates user code: high findings refuse the run by default (configurable),
and code that slips past the scan is still contained by the sandbox."""

from __future__ import annotations

import socket

import pytest

from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.scan import ScanBlocked
from clowder_ml.sandbox.usercode import apply, evaluate_config

RISKY = """\
import os, socket
def probe(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
        return "ESCAPED"
    except OSError as exc:
        return type(exc).__name__
CONFIG = lambda: {"uid": os.getuid(), "net": probe(PORT)}
"""


def test_high_finding_blocks_evaluate_config_before_any_sandbox_starts() -> None:
    with pytest.raises(ScanBlocked) as info:
        evaluate_config(RISKY.replace("PORT", "1"))
    assert info.value.code == "validation_failed"
    assert "line 1" in info.value.message and "socket" in info.value.message
    assert any(f.rule_id == "CML001" for f in info.value.report.blocking)


def test_with_the_scan_off_the_sandbox_still_contains(gvisor: RunscSandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)
        port = server.getsockname()[1]
        value = evaluate_config(RISKY.replace("PORT", str(port)), sandbox=gvisor,
                                scan_block_at="off")
        with pytest.raises(TimeoutError):
            server.accept()
    assert value["uid"] == 65534 and value["net"] != "ESCAPED"


def test_apply_is_gated_too() -> None:
    with pytest.raises(ScanBlocked):
        list(apply("def f(x):\n    return eval(x)\n", "f", ["1+1"]))


def test_settings_decide_the_default(gvisor: RunscSandbox,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code = "import os\nCONFIG = {'sep': os.sep}\n"  # `import os` is a medium finding
    assert evaluate_config(code, sandbox=gvisor) == {"sep": "/"}
    monkeypatch.setattr(gvisor.settings, "scan_block_at", "medium")
    with pytest.raises(ScanBlocked):
        evaluate_config(code, sandbox=gvisor)
