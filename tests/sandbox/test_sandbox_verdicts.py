"""One test per verdict, against real runsc (gVisor)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from clowder_ml.sandbox import GVISOR, SandboxResult, Verdict
from clowder_ml.sandbox.gvisor import RunscSandbox

RunPy = Callable[..., SandboxResult]


def test_ok(run_py: RunPy) -> None:
    r = run_py("print('hello')")
    assert r.verdict is Verdict.OK, r
    assert (r.exit_code, r.signal, r.stdout, r.stderr) == (0, None, b"hello\n", b"")
    assert r.isolation == GVISOR and not r.weaker_isolation
    assert 0 < r.usage.wall_s < 10 and r.usage.cpu_s > 0
    assert 10 << 20 < r.usage.peak_memory_bytes < 200 << 20


def test_error_is_a_nonzero_exit(run_py: RunPy) -> None:
    r = run_py("import sys; print('bye', file=sys.stderr); sys.exit(3)")
    assert r.verdict is Verdict.ERROR, r
    assert (r.exit_code, r.signal, r.stderr) == (3, None, b"bye\n")


def test_exit_137_is_an_error_not_a_kill(run_py: RunPy) -> None:
    r = run_py("import os; os._exit(137)")
    assert (r.verdict, r.exit_code, r.signal) == (Verdict.ERROR, 137, None)


def test_killed_by_a_signal(run_py: RunPy) -> None:
    r = run_py("import os; print('before', flush=True); os.kill(os.getpid(), 9)")
    assert (r.verdict, r.exit_code, r.signal) == (Verdict.KILLED, 137, 9), r
    assert r.stdout == b"before\n"


def test_timeout(run_py: RunPy) -> None:
    r = run_py("import time; print('sleeping', flush=True); time.sleep(1e9)", wall_s=2)
    assert r.verdict is Verdict.TIMEOUT, r
    assert r.stdout == b"sleeping\n"
    assert 2 <= r.usage.wall_s < 4
    assert r.usage.cpu_s < 1.5


def test_cpu_limit(run_py: RunPy) -> None:
    r = run_py("while True: pass", cpu_s=2, wall_s=30)
    assert r.verdict is Verdict.CPU_LIMIT, r
    # Sampled every 25 ms; the margin is for a busy host delaying the supervisor.
    assert 2 <= r.usage.cpu_s < 4.5
    assert r.usage.wall_s < 15


def test_memory_limit_keeps_what_was_written(run_py: RunPy) -> None:
    r = run_py("""
        import sys
        print('start', flush=True)
        print('allocating', file=sys.stderr, flush=True)
        x = bytearray(2 << 30)
        print('never')
    """, memory_bytes="256M")
    assert r.verdict is Verdict.MEMORY_LIMIT, r
    assert r.stdout == b"start\n" and r.stderr == b"allocating\n"
    assert r.usage.peak_memory_bytes >= 200 << 20


def test_memory_limit_for_gradual_growth(run_py: RunPy) -> None:
    r = run_py("""
        chunks = []
        while True:
            chunks.append(bytearray(8 << 20))
    """, memory_bytes="128M", disk_bytes="1G")
    assert r.verdict is Verdict.MEMORY_LIMIT, r
    # Stopped near the memory limit even though the hard cap is memory + disk.
    assert r.usage.peak_memory_bytes < 400 << 20


def test_fork_bomb_is_a_process_limit(run_py: RunPy) -> None:
    r = run_py("""
        import os
        while True:
            os.fork()
    """, processes=32, wall_s=20)
    assert r.verdict is Verdict.PROCESS_LIMIT, r
    assert b"Resource temporarily unavailable" in r.stderr


def test_threads_count_as_processes(run_py: RunPy) -> None:
    r = run_py("""
        import threading, time
        for _ in range(100):
            threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    """, processes=16)
    assert r.verdict is Verdict.PROCESS_LIMIT, r
    assert b"can't start new thread" in r.stderr


def test_output_limit(run_py: RunPy) -> None:
    r = run_py("""
        import sys
        for _ in range(100):
            sys.stdout.write('x' * (1 << 20))
    """, output_bytes="1M")
    assert r.verdict is Verdict.OUTPUT_LIMIT, r
    assert r.stdout == b"x" * (1 << 20) and r.stdout_truncated and not r.stderr_truncated


def test_disk_limit(run_py: RunPy) -> None:
    r = run_py("""
        with open('/work/big', 'wb') as f:
            for _ in range(500):
                f.write(b'x' * (1 << 20))
    """, disk_bytes="50M")
    assert r.verdict is Verdict.DISK_LIMIT, r
    assert b"No space left on device" in r.stderr
    assert r.usage.disk_bytes == 50 << 20


def test_many_small_files_hit_the_disk_limit(run_py: RunPy) -> None:
    r = run_py("""
        i = 0
        while True:
            open(f'/work/f{i}', 'w').close()
            i += 1
    """, disk_bytes="1M", wall_s=30)
    assert r.verdict is Verdict.DISK_LIMIT, r


def test_open_files_limit_fails_inside_with_emfile(run_py: RunPy) -> None:
    r = run_py("""
        import errno
        files = []
        try:
            while True:
                files.append(open('/etc/passwd'))
        except OSError as e:
            print(e.errno == errno.EMFILE, len(files) < 64)
    """, open_files=32)
    assert r.verdict is Verdict.OK and r.stdout == b"True True\n", r


def test_command_that_cannot_execute_is_an_error(gvisor: RunscSandbox) -> None:
    r = gvisor.run(["/nonexistent/program"])
    assert r.verdict is Verdict.ERROR and r.exit_code is None, r
    assert b"no such file" in r.stderr.lower()


def test_reading_a_large_input_is_not_memory(run_py: RunPy, tmp_path: Path) -> None:
    # Page cache of files read is charged to the sandbox's cgroup but is reclaimable; it
    # must not count as the program's memory.
    data = tmp_path / "in"
    data.mkdir()
    with open(data / "big.bin", "wb") as f:
        for _ in range(256):
            f.write(b"\1" * (1 << 20))
    os.chmod(tmp_path, 0o755)
    r = run_py("""
        n = 0
        with open('/data/big.bin', 'rb') as f:
            while chunk := f.read(1 << 20):
                n += len(chunk)
        print(n)
    """, input_dir=data, memory_bytes="96M")
    assert r.verdict is Verdict.OK, r
    assert r.stdout == b"%d\n" % (256 << 20)
    assert r.usage.peak_memory_bytes < 96 << 20
