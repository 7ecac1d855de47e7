"""The shared predictions writer: rows in call order, counts, accuracy and confusion matrix,
true labels the model does not know."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from clowder_ml.ml.predict_output import PredictionWriter
from clowder_ml.ml.predict_ray import _in_order, actor_cpus, actor_threads


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_rows_in_order_with_scores_counts_and_the_header(tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    with PredictionWriter(out, ["neg", "pos", "mixed"], scored=False) as w:
        assert w.add("a", "t.csv:1", [0.1, 0.7, 0.2]) == 1
        assert w.add("b,quoted", "t.csv:2", [0.5, 0.25, 0.25]) == 0
        assert w.add("c", "t.csv:3", [0.2, 0.4, 0.4]) == 1  # a tie goes to the lower index
        summary = w.summary()
    assert _rows(out) == [
        ["id", "input", "predicted", "score", "score_neg", "score_pos", "score_mixed"],
        ["a", "t.csv:1", "pos", "0.700000", "0.100000", "0.700000", "0.200000"],
        ["b,quoted", "t.csv:2", "neg", "0.500000", "0.500000", "0.250000", "0.250000"],
        ["c", "t.csv:3", "pos", "0.400000", "0.200000", "0.400000", "0.400000"],
    ]
    assert summary == {"rows": 3, "labels": ["neg", "pos", "mixed"],
                       "label_counts": {"neg": 1, "pos": 2, "mixed": 0}}


def test_accuracy_and_confusion_matrix_count_unknown_true_labels_as_wrong(
        tmp_path: Path) -> None:
    with PredictionWriter(tmp_path / "p.csv", ["neg", "pos"], scored=True) as w:
        w.add("1", "x:1", [0.9, 0.1], "neg")   # right
        w.add("2", "x:2", [0.2, 0.8], "neg")   # wrong: neg predicted pos
        w.add("3", "x:3", [0.3, 0.7], "pos")   # right
        w.add("4", "x:4", [0.6, 0.4], "maybe")  # a label the model does not know
        summary = w.summary()
    assert summary["rows"] == 4
    assert summary["label_counts"] == {"neg": 2, "pos": 2}
    assert summary["confusion_matrix"] == [[1, 1], [0, 1]]
    assert summary["unknown_true_labels"] == 1
    assert summary["accuracy"] == pytest.approx(2 / 4)


def test_scored_without_any_true_label_has_no_accuracy(tmp_path: Path) -> None:
    with PredictionWriter(tmp_path / "p.csv", ["a", "b"], scored=True) as w:
        summary = w.summary()
    assert summary["accuracy"] is None and summary["confusion_matrix"] == [[0, 0], [0, 0]]
    assert _rows(tmp_path / "p.csv") == [["id", "input", "predicted", "score", "score_a",
                                          "score_b"]]


def test_results_from_workers_are_put_back_in_input_order() -> None:
    import numpy as np

    batches = [{"index": np.array([2, 3]), "v": np.array(["c", "d"], dtype=object)},
               {"index": np.array([0]), "v": np.array(["a"], dtype=object)},
               {"index": np.array([1, 4]), "v": np.array(["b", "e"], dtype=object)}]
    assert [r["v"] for r in _in_order(batches)] == ["a", "b", "c", "d", "e"]
    with pytest.raises(RuntimeError, match="missing row 1"):
        list(_in_order([{"index": np.array([0, 2])}]))


def test_each_actor_reserves_the_jobs_cpus_and_the_runner_none() -> None:
    # The engine's rule (resources.workers mirrors the param): cpus are per worker.
    assert actor_cpus(1, 2, 2, runner_holds=False) == 1.0
    assert actor_threads(1, 2, runner_holds=False) == 1
    assert actor_cpus(0.5, 4, 2, runner_holds=False) == 0.5
    assert actor_threads(3.5, 2, runner_holds=False) == 3


def test_a_runner_that_holds_the_cpus_shares_them_and_never_overbooks() -> None:
    # A 1-CPU runner on a 2-CPU head: the actors book the other CPU, half each.
    assert actor_cpus(1, 2, 2, runner_holds=True) == 0.5
    assert actor_threads(1, 2, runner_holds=True) == 1
    # A runner holding the whole head: 0-CPU actors (no deadlock), threads still shared.
    assert actor_cpus(2, 2, 2, runner_holds=True) == 0.0
    assert actor_threads(2, 2, runner_holds=True) == 1
    assert actor_cpus(8, 4, 64, runner_holds=True) == 2.0
    assert actor_threads(8, 4, runner_holds=True) == 2
