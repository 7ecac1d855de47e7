"""Classification metrics in pure Python, computed exactly.

Counts are integers and ratios are formed with :class:`fractions.Fraction` and converted
to ``float`` once at the end, so results do not depend on summation order and match a
hand computation to the last bit. Labels are ints in ``range(n_labels)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"length mismatch: {len(y_true)} true labels, {len(y_pred)} predictions")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of positions where ``y_pred`` equals ``y_true``; 0.0 for empty input."""
    _check(y_true, y_pred)
    if not y_true:
        return 0.0
    correct = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p)
    return float(Fraction(correct, len(y_true)))


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], n_labels: int
) -> list[list[int]]:
    """``m[t][p]`` = number of examples with true label ``t`` predicted as ``p``.

    Raises ``ValueError`` for a label outside ``range(n_labels)``.
    """
    _check(y_true, y_pred)
    m = [[0] * n_labels for _ in range(n_labels)]
    for t, p in zip(y_true, y_pred, strict=True):
        if not (0 <= t < n_labels and 0 <= p < n_labels):
            raise ValueError(f"label out of range(0, {n_labels}): true={t} pred={p}")
        m[t][p] += 1
    return m


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> float:
    """Unweighted mean over all ``n_labels`` classes of F1 = 2TP / (2TP + FP + FN).

    Every class counts, including ones absent from both ``y_true`` and ``y_pred``; such a
    class (zero denominator) scores 0, as scikit-learn's ``f1_score(average="macro",
    labels=range(n_labels), zero_division=0)`` does. 0.0 for empty input.
    """
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    m = confusion_matrix(y_true, y_pred, n_labels)
    total = Fraction(0)
    for c in range(n_labels):
        tp = m[c][c]
        fn = sum(m[c]) - tp
        fp = sum(m[r][c] for r in range(n_labels)) - tp
        denom = 2 * tp + fp + fn
        if denom:
            total += Fraction(2 * tp, denom)
    return float(total / n_labels)
