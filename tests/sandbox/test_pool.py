"""The warm pool: pre-started single-use sandboxes, refilled in the background."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sandbox_helpers import assert_no_leftovers

from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.pool import WarmPool
from clowder_ml.sandbox.result import Verdict
from clowder_ml.sandbox.usercode import UserCodeLimit, evaluate_config


def test_pool_hands_out_warm_and_refills(gvisor: RunscSandbox) -> None:
    with WarmPool(gvisor, size=2) as pool:
        assert pool.wait_ready(30)
        t0 = time.monotonic()
        assert evaluate_config("CONFIG = {'n': 1}", pool=pool) == {"n": 1}
        assert time.monotonic() - t0 < 1.0  # no sandbox start on the request path
        assert evaluate_config("CONFIG = {'n': 2}", pool=pool) == {"n": 2}
        assert pool.cold_takes == 0
        assert pool.wait_ready(30)  # refilled in the background
        assert pool.started >= 4
        # Single use: state from one request never reaches the next.
        evaluate_config("import builtins\nbuiltins.LEAK = 1\nCONFIG = {}", pool=pool,
                        scan_block_at="off")  # the scan would refuse it; this is about reuse
        assert evaluate_config("import builtins\nCONFIG = {'leak': hasattr(builtins, "
                               "'LEAK')}", pool=pool, scan_block_at="off") == {"leak": False}
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_pooled_timeout_counts_from_the_request(gvisor: RunscSandbox) -> None:
    with WarmPool(gvisor, size=1) as pool:
        assert pool.wait_ready(30)
        time.sleep(1.5)  # idle time in the pool is not request time
        with pytest.raises(UserCodeLimit) as err:
            evaluate_config("while True:\n    pass\n", pool=pool, timeout_s=1.0)
        assert err.value.verdict is Verdict.TIMEOUT
        assert evaluate_config("CONFIG = {'after': 1}", pool=pool) == {"after": 1}
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_empty_pool_starts_cold(gvisor: RunscSandbox) -> None:
    with WarmPool(gvisor, size=0) as pool:
        assert evaluate_config("CONFIG = {'n': 3}", pool=pool) == {"n": 3}
        assert pool.cold_takes == 1
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_close_stops_idle_sandboxes(gvisor: RunscSandbox) -> None:
    pool = WarmPool(gvisor, size=3)
    assert pool.wait_ready(30)
    pool.close()
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_interpreter_exit_leaves_nothing(gvisor: RunscSandbox) -> None:
    """A pool (and a stream) never closed: the atexit hooks stop and clean up both."""
    prog = (
        "from pathlib import Path\n"
        "from clowder_ml.settings import Settings\n"
        "from clowder_ml.sandbox.gvisor import RunscSandbox\n"
        "from clowder_ml.sandbox.pool import WarmPool\n"
        "from clowder_ml.sandbox.agent_client import start_agent, CONFIG_LIMITS\n"
        f"sb = RunscSandbox(Settings(sandbox_tmp_dir=Path({str(gvisor.tmp_root)!r}), "
        f"sandbox_state_dir=Path({str(gvisor.state_dir)!r})))\n"
        "pool = WarmPool(sb, size=2)\n"
        "assert pool.wait_ready(30)\n"
        "agent = start_agent(sb, CONFIG_LIMITS)\n"
        "assert agent.await_hello(__import__('time').monotonic() + 30)\n"
        "print('up', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "up" in done.stdout
    assert_no_leftovers(gvisor)
