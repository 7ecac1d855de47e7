"""apply_arrow() against real gVisor: Arrow batches in and out, per-row errors."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sandbox_helpers import assert_no_leftovers

from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.usercode import RowError, apply_arrow

CODE = """
def preprocess(example):
    if example["i"] == 13:
        raise ValueError("unlucky")
    return {"i": example["i"], "twice": example["i"] * 2, "s": example["s"].upper()}
"""


def _batches(n_batches: int, size: int) -> list[pa.RecordBatch]:
    return [pa.RecordBatch.from_pylist([{"i": b * size + k, "s": f"r{b * size + k}"}
                                        for k in range(size)]) for b in range(n_batches)]


def test_arrow_batches_in_order_with_error_records(gvisor: RunscSandbox) -> None:
    out = list(apply_arrow(CODE, "preprocess", _batches(5, 1000), sandbox=gvisor,
                           on_error="record"))
    assert len(out) == 5
    rows = [r for res in out for r in res.batch.to_pylist()]
    assert len(rows) == 5000
    assert rows[12] == {"i": 12, "twice": 24, "s": "R12"}
    assert rows[13] == {"i": None, "twice": None, "s": None}
    assert [f.row for f in out[0].failures] == [13]
    assert "unlucky" in out[0].failures[0].message
    assert out[4].batch.to_pylist()[-1] == {"i": 4999, "twice": 9998, "s": "R4999"}


def test_arrow_fail_fast(gvisor: RunscSandbox) -> None:
    with pytest.raises(RowError) as err:
        list(apply_arrow(CODE, "preprocess", _batches(2, 100), sandbox=gvisor))
    assert err.value.row == 13
    assert err.value.line == 4
    wait_for_live_processes()
    assert_no_leftovers(gvisor)
