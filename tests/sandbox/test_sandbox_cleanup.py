"""After every run, whatever its end, nothing is left on the host; runs are independent and
may run at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox_helpers import assert_no_leftovers

from clowder_ml.sandbox import Limits, SandboxResult, Verdict
from clowder_ml.sandbox.cgroups import HostCgroup
from clowder_ml.sandbox.gvisor import RunscSandbox

RunPy = Callable[..., SandboxResult]


def test_nothing_left_after_timeout_kill_and_limits(gvisor: RunscSandbox, run_py: RunPy) -> None:
    assert run_py("import time; time.sleep(1e9)", wall_s=1).verdict is Verdict.TIMEOUT
    assert_no_leftovers(gvisor)
    assert run_py("import os; os.kill(os.getpid(), 9)").verdict is Verdict.KILLED
    assert_no_leftovers(gvisor)
    assert run_py("print('x' * 100000)", output_bytes=1000).verdict is Verdict.OUTPUT_LIMIT
    assert_no_leftovers(gvisor)
    r = run_py("import os, time\nfor _ in range(8):\n    os.fork()\ntime.sleep(60)", wall_s=2)
    # 256 Python processes: whichever limit the fork bomb meets first stops it (the pids
    # limit, the memory limit as each child copies the interpreter, or the wall clock).
    assert r.verdict in (Verdict.PROCESS_LIMIT, Verdict.MEMORY_LIMIT, Verdict.TIMEOUT), r
    assert_no_leftovers(gvisor)


def test_four_sandboxes_at_once(gvisor: RunscSandbox, tmp_path: Path) -> None:
    cases = {
        "ok": ("import time; time.sleep(1); print('done')", Limits(wall_s=30), Verdict.OK),
        "timeout": ("import time; time.sleep(100)", Limits(wall_s=2), Verdict.TIMEOUT),
        "error": ("import time; time.sleep(0.5); raise SystemExit(7)", Limits(),
                  Verdict.ERROR),
        "disk": ("open('/work/f', 'wb').write(b'x' * (8 << 20))",
                 Limits(disk_bytes=4 << 20), Verdict.DISK_LIMIT),
    }

    def one(name: str) -> SandboxResult:
        code, limits, _ = cases[name]
        path = tmp_path / f"{name}.py"
        path.write_text(code)
        return gvisor.run_python(path, limits=limits, env={"NAME": name})

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(one, cases), strict=True))
    for name, r in results.items():
        assert r.verdict is cases[name][2], (name, r)
    assert results["ok"].stdout == b"done\n"
    assert results["error"].exit_code == 7
    # They overlapped: four runs of >= 0.5 s each finished in well under their sum.
    assert max(r.usage.wall_s for r in results.values()) < 6
    assert_no_leftovers(gvisor)


def test_platform_crash_kills_the_sandbox_and_leftovers_are_reaped(gvisor: RunscSandbox) -> None:
    env = dict(os.environ, CLOWDER_ML_SANDBOX_TMP_DIR=str(gvisor.tmp_root),
               CLOWDER_ML_SANDBOX_STATE_DIR=str(gvisor.state_dir))
    code = ("from clowder_ml.sandbox import get_sandbox, Limits\n"
            "get_sandbox().run(['/bin/sleep', '1000'], limits=Limits(wall_s=1000))\n")
    platform = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 20
        while not _sandbox_pids(gvisor):
            assert time.monotonic() < deadline, "the sandbox never started"
            assert platform.poll() is None, "the platform process ended early"
            time.sleep(0.05)
    finally:
        platform.kill()
        platform.wait()
    # The parent-death signal ends runsc run, and runsc's attached sandbox with it.
    deadline = time.monotonic() + 10
    while _sandbox_pids(gvisor):
        assert time.monotonic() < deadline, "the sandbox outlived its platform process"
        time.sleep(0.05)
    # What the dead process could not clean up (state, cgroups, mount, bundle) is reaped.
    reaped = gvisor.reap_stale(min_age_s=0)
    assert len(reaped) == 1
    assert HostCgroup.existing(reaped[0]) is None
    assert_no_leftovers(gvisor)


def _sandbox_pids(sb: RunscSandbox) -> list[int]:
    marker = f"--root={sb.state_dir}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.startswith(b"runsc-sandbox") and marker in cmdline and state != "Z":
            found.append(int(pid))
    return found
