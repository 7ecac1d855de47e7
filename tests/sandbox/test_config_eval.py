"""evaluate_config against real gVisor: the value crosses back as JSON only, and each way
user code can go wrong has its own clear error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sandbox_helpers import assert_no_leftovers

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import Verdict
from clowder_ml.sandbox.scan import ScanBlocked
from clowder_ml.sandbox.usercode import (
    ConfigMissing,
    ConfigNotJSON,
    UserCodeError,
    UserCodeLimit,
    evaluate_config,
)


class TrainConfig(BaseModel):
    lr: float
    epochs: int = 1


def test_dict_config(gvisor: RunscSandbox) -> None:
    code = "import math\nCONFIG = {'lr': 0.1, 'layers': [1, 2], 'name': 'x', 'pi': math.pi}\n"
    assert evaluate_config(code, sandbox=gvisor) == {
        "lr": 0.1, "layers": [1, 2], "name": "x", "pi": 3.141592653589793}


def test_callable_config_and_schema(gvisor: RunscSandbox) -> None:
    code = "def CONFIG():\n    return {'lr': '0.5'}\n"
    assert evaluate_config(code, TrainConfig, sandbox=gvisor) == {"lr": 0.5, "epochs": 1}


def test_schema_error_is_readable(gvisor: RunscSandbox) -> None:
    with pytest.raises(ValidationFailed) as err:
        evaluate_config("CONFIG = {'epochs': 'many'}", TrainConfig, sandbox=gvisor)
    assert "lr: Field required" in err.value.message
    assert "epochs:" in err.value.message


def test_user_exception_reports_user_line(gvisor: RunscSandbox) -> None:
    code = "a = 1\n\ndef build():\n    return {'x': 1 / 0}\n\nCONFIG = build\n"
    with pytest.raises(UserCodeError) as err:
        evaluate_config(code, sandbox=gvisor)
    assert err.value.line == 4
    assert "ZeroDivisionError" in err.value.message
    assert "config.py, line 4" in err.value.message
    assert "agent" not in err.value.traceback  # the user's frames only
    assert "return {'x': 1 / 0}" in err.value.traceback


def test_syntax_error_line(gvisor: RunscSandbox) -> None:
    code = "x = 1\nCONFIG = {'a': }\n"
    # The pre-run scan catches it first, naming the line, without starting a sandbox ...
    with pytest.raises(ScanBlocked) as blocked:
        evaluate_config(code, sandbox=gvisor)
    assert "line 2" in blocked.value.message and "syntax error" in blocked.value.message
    # ... and with the scan off, the sandbox reports the same line from Python itself.
    with pytest.raises(UserCodeError) as err:
        evaluate_config(code, sandbox=gvisor, scan_block_at="off")
    assert err.value.line == 2
    assert "SyntaxError" in err.value.message


def test_infinite_loop_times_out(gvisor: RunscSandbox) -> None:
    with pytest.raises(UserCodeLimit) as err:
        evaluate_config("while True:\n    pass\n", sandbox=gvisor, timeout_s=1.5)
    assert err.value.verdict is Verdict.TIMEOUT


def test_memory_limit(gvisor: RunscSandbox) -> None:
    code = "x = bytearray(400 * 1024 * 1024)\nCONFIG = {}\n"
    with pytest.raises(UserCodeLimit) as err:
        evaluate_config(code, sandbox=gvisor, limits=Limits(memory_bytes=128 << 20))
    assert err.value.verdict is Verdict.MEMORY_LIMIT


def test_non_json_value_names_type(gvisor: RunscSandbox) -> None:
    with pytest.raises(ConfigNotJSON) as err:
        evaluate_config("CONFIG = {'a': {'b': {1, 2}}}", sandbox=gvisor)
    assert "CONFIG['a']['b'] is a set" in err.value.message
    with pytest.raises(ConfigNotJSON, match="nan"):
        evaluate_config("CONFIG = {'a': float('nan')}", sandbox=gvisor)
    with pytest.raises(ConfigNotJSON, match="not list"):
        evaluate_config("CONFIG = [1]", sandbox=gvisor)


def test_missing_config(gvisor: RunscSandbox) -> None:
    with pytest.raises(ConfigMissing, match="does not define CONFIG"):
        evaluate_config("config = {}", sandbox=gvisor)


def test_output_is_bounded_and_prints_do_not_corrupt(gvisor: RunscSandbox) -> None:
    with pytest.raises(ConfigNotJSON, match="over 1000 bytes"):
        evaluate_config("CONFIG = {'a': 'x' * 5000}", sandbox=gvisor, max_bytes=1000)
    code = "import os\nprint('noise')\nos.write(1, b'raw noise')\nCONFIG = {'ok': True}\n"
    assert evaluate_config(code, sandbox=gvisor) == {"ok": True}


def test_nothing_left_behind(gvisor: RunscSandbox) -> None:
    evaluate_config("CONFIG = {}", sandbox=gvisor)
    wait_for_live_processes()
    assert_no_leftovers(gvisor)
