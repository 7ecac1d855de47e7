"""The one writer of ``predictions.csv`` and of the summary every predict task returns.

Contract
--------
* Columns: ``id``, ``input``, ``predicted``, ``score`` (the predicted class's probability),
  then one ``score_<label>`` per class in the model's label order. Scores are written with
  six decimals. Rows are written in the order :meth:`PredictionWriter.add` is called: the
  callers (in-process streaming and the Ray Data path) call it in input order.
* :meth:`PredictionWriter.summary` gives ``rows`` and ``label_counts`` (every label of the
  model, zero when never predicted) and, when the writer was made with ``scored=True``,
  ``accuracy``, ``confusion_matrix`` (rows: true label, columns: predicted, model label
  order) and ``unknown_true_labels``. A true label the model does not know cannot be placed
  in the matrix: it is counted in ``unknown_true_labels`` and counts as wrong in
  ``accuracy`` (whose denominator is every row with a true label). ``accuracy`` is None
  when no row was scored.
* The predicted class is the first of the highest probabilities (ties go to the lower
  label index), as ``max`` over the label order gives.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from clowder_ml.ml.metrics import confusion_matrix


class PredictionWriter:
    """Writes ``predictions.csv`` row by row and counts what the summary needs.

    Use as a context manager (the file is closed on leaving, also after errors); ``labels``
    are the model's labels in class-index order; ``scored`` says the rows carry true labels.
    """

    def __init__(self, path: Path, labels: Sequence[str], scored: bool) -> None:
        self.labels = list(labels)
        self.scored = scored
        self.rows = 0
        self._index = {name: i for i, name in enumerate(self.labels)}
        self._counts = [0] * len(self.labels)
        self._y_true: list[int] = []
        self._y_pred: list[int] = []
        self._unknown = 0
        self._fh: IO[str] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        # csv.writer with lists, not DictWriter: no per-row dict (this is the hot loop of
        # large prediction runs).
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(["id", "input", "predicted", "score",
                               *[f"score_{name}" for name in self.labels]])

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def add(self, row_id: str, shown: str, probs: Sequence[float],
            truth: str | None = None) -> int:
        """Write one row (``shown`` is its ``input`` column); returns the predicted index.

        ``truth`` is the row's true label (ignored unless the writer is ``scored``).
        """
        best = max(range(len(probs)), key=probs.__getitem__)
        self._counts[best] += 1
        self._writer.writerow([row_id, shown, self.labels[best], f"{probs[best]:.6f}",
                               *[f"{x:.6f}" for x in probs]])
        if self.scored and truth is not None:
            known = self._index.get(truth)
            if known is None:
                self._unknown += 1
            else:
                self._y_true.append(known)
                self._y_pred.append(best)
        self.rows += 1
        return best

    def summary(self) -> dict[str, Any]:
        """``rows``, ``label_counts`` and, when scored, the accuracy figures (see module)."""
        out: dict[str, Any] = {
            "rows": self.rows, "labels": self.labels,
            "label_counts": dict(zip(self.labels, self._counts, strict=True))}
        if self.scored:
            scored = len(self._y_true) + self._unknown
            correct = sum(t == q for t, q in zip(self._y_true, self._y_pred, strict=True))
            out["accuracy"] = correct / scored if scored else None
            out["confusion_matrix"] = confusion_matrix(self._y_true, self._y_pred,
                                                       len(self.labels))
            out["unknown_true_labels"] = self._unknown
        return out
