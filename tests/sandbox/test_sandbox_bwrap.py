"""The explicit, weaker bubblewrap backend: same interface, says it is weaker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from clowder_ml.sandbox import BUBBLEWRAP_WEAKER, SandboxResult, Verdict

RunPy = Callable[..., SandboxResult]


def test_runs_and_reports_weaker_isolation(run_bwrap: RunPy,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOWDER_TEST_SECRET", "host-secret-value")
    r = run_bwrap("""
        import json, os, socket
        status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
        try:
            socket.create_connection(('1.1.1.1', 53), timeout=2); net = 'open'
        except OSError:
            net = 'closed'
        open('/work/x', 'w').write('1')
        print(json.dumps({'uid': os.getuid(), 'env': dict(os.environ), 'net': net,
                          'cap': status['CapEff'].strip(), 'nnp': status['NoNewPrivs'].strip(),
                          'cwd': os.getcwd()}))
    """, env={"GIVEN": "1"})
    assert r.verdict is Verdict.OK, r
    assert r.isolation == BUBBLEWRAP_WEAKER and r.weaker_isolation
    assert r.to_dict()["isolation"] == "bubblewrap (weaker)"
    assert r.to_dict()["weaker_isolation"] is True
    d = json.loads(r.stdout)
    assert d["uid"] == 65534 and d["cwd"] == "/work" and d["net"] == "closed"
    assert d["cap"] == "0000000000000000" and d["nnp"] == "1"
    assert "CLOWDER_TEST_SECRET" not in d["env"] and d["env"]["GIVEN"] == "1"


@pytest.mark.parametrize(("code", "limits", "verdict"), [
    ("import sys; sys.exit(4)", {}, Verdict.ERROR),
    ("import time; time.sleep(100)", {"wall_s": 1}, Verdict.TIMEOUT),
    ("x = bytearray(2 << 30)", {"memory_bytes": "128M"}, Verdict.MEMORY_LIMIT),
    ("import os\nwhile True: os.fork()", {"processes": 16}, Verdict.PROCESS_LIMIT),
    ("open('/work/f', 'wb').write(b'x' * (4 << 20))", {"disk_bytes": "1M"}, Verdict.DISK_LIMIT),
])
def test_limits_have_their_verdicts(run_bwrap: RunPy, code: str, limits: dict[str, object],
                                    verdict: Verdict) -> None:
    r = run_bwrap(code, **limits)
    assert r.verdict is verdict, r
    assert r.isolation == BUBBLEWRAP_WEAKER
