"""apply() against real gVisor: streaming, order, per-row errors, protocol safety."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sandbox_helpers import assert_no_leftovers

from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import Verdict
from clowder_ml.sandbox.usercode import (
    RowError,
    RowFailure,
    UserCodeError,
    UserCodeLimit,
    apply,
)

CODE = """
def preprocess(example):
    if example.get("bad"):
        raise ValueError(f"bad row {example['i']}")
    return {"i": example["i"], "text": example["text"].upper()}
"""


def test_streams_20k_in_order(gvisor: RunscSandbox) -> None:
    n = 20_000
    records = ({"i": i, "text": f"row {i}"} for i in range(n))  # a generator: streamed
    out = apply(CODE, "preprocess", records, sandbox=gvisor)
    count = 0
    for i, res in enumerate(out):
        assert res == {"i": i, "text": f"ROW {i}"}
        count += 1
    assert count == n


def test_raw_jsonl_passthrough(gvisor: RunscSandbox) -> None:
    lines = [b'{"i": 1, "text": "a"}\n', b'{"i": 2, "text": "b"}']
    out = list(apply(CODE, "preprocess", lines, sandbox=gvisor, raw=True))
    assert out == [b'{"i": 1, "text": "A"}', b'{"i": 2, "text": "B"}']


def test_row_error_fail_fast(gvisor: RunscSandbox) -> None:
    records = [{"i": i, "text": "t", "bad": i == 5} for i in range(100)]
    got = []
    with pytest.raises(RowError) as err:
        for res in apply(CODE, "preprocess", records, sandbox=gvisor):
            got.append(res)
    assert len(got) == 5
    assert err.value.row == 5
    assert err.value.line == 4
    assert "bad row 5" in err.value.message


def test_row_error_records(gvisor: RunscSandbox) -> None:
    records = [{"i": i, "text": "t", "bad": i % 3 == 0} for i in range(9)]
    out = list(apply(CODE, "preprocess", records, sandbox=gvisor, on_error="record"))
    assert len(out) == 9
    fails = [r for r in out if isinstance(r, RowFailure)]
    assert [f.row for f in fails] == [0, 3, 6]
    assert "ValueError: bad row 3" in fails[1].message
    assert out[1] == {"i": 1, "text": "T"}


def test_non_json_result_is_a_row_error(gvisor: RunscSandbox) -> None:
    code = "def f(x):\n    return {1, 2} if x else x\n"
    out = list(apply(code, "f", [0, 1, 2], sandbox=gvisor, on_error="record"))
    assert out[0] == 0
    assert isinstance(out[1], RowFailure)
    assert "set" in out[1].message


def test_prints_do_not_corrupt_protocol(gvisor: RunscSandbox) -> None:
    code = ("import os, sys\ndef f(x):\n    print('hello', x)\n"
            "    sys.stdout.write('more\\n')\n    os.write(1, b'raw\\n')\n    return x + 1\n")
    assert list(apply(code, "f", range(50), sandbox=gvisor)) == list(range(1, 51))


def test_missing_function_and_load_error(gvisor: RunscSandbox) -> None:
    with pytest.raises(UserCodeError, match="does not define a function nope"):
        list(apply(CODE, "nope", [1], sandbox=gvisor))
    with pytest.raises(UserCodeError) as err:
        list(apply("x = 1\nimport does_not_exist\n", "f", [1], sandbox=gvisor))
    assert err.value.line == 2


def test_abandoned_iterator_leaves_nothing(gvisor: RunscSandbox) -> None:
    out = apply(CODE, "preprocess", ({"i": i, "text": "t"} for i in range(10**7)),
                sandbox=gvisor)
    assert next(out) == {"i": 0, "text": "T"}
    out.close()  # type: ignore[attr-defined]
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_hanging_function_hits_the_wall_limit(gvisor: RunscSandbox) -> None:
    code = "import time\ndef f(x):\n    if x == 3:\n        time.sleep(100)\n    return x\n"
    got = []
    with pytest.raises(UserCodeLimit) as err:
        for res in apply(code, "f", range(10), sandbox=gvisor, limits=Limits(wall_s=2),
                         batch=1):
            got.append(res)
    assert err.value.verdict is Verdict.TIMEOUT
    assert got == [0, 1, 2]  # batch=1: results arrive as they are made


def test_failing_record_source_is_reported(gvisor: RunscSandbox) -> None:
    def records() -> Iterator[int]:
        yield 1
        raise KeyError("source broke")

    with pytest.raises(KeyError, match="source broke"):
        list(apply("def f(x):\n    return x\n", "f", records(), sandbox=gvisor))
    wait_for_live_processes()
    assert_no_leftovers(gvisor)


def test_non_json_record_is_the_callers_error(gvisor: RunscSandbox) -> None:
    with pytest.raises(TypeError, match="set"):
        list(apply("def f(x):\n    return x\n", "f", [1, {2}], sandbox=gvisor))
    never_iterated = apply("def f(x):\n    return x\n", "f", [1], sandbox=gvisor)
    del never_iterated  # started lazily: nothing to clean up
    wait_for_live_processes()
    assert_no_leftovers(gvisor)
