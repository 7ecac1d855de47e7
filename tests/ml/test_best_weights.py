"""keep_best: a run ends with the weights of its best eval, bit-identical with or without a
checkpoint folder, and a run killed after (or before) a new best resumes to the same end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clowder_ml.ml.train_loop import BEST_FILE, TrainParams, _BestWeights, list_checkpoints, train
from tests.ml.test_train_loop import BASE, EVAL, TRAIN, FakeData, make_model, weights_sha

# The eval labels are shifted by one class: the better the model learns the training data,
# the worse it scores here, so the first epoch is the best and the last is worse.
SHIFTED = FakeData(EVAL.ids, [(y + 1) % 3 for y in EVAL.labels])
PARAMS = TrainParams(**{**BASE.__dict__, "epochs": 4, "learning_rate": 5e-3,
                        "keep_best": True, "checkpoint_every_steps": 3})


class Crash(Exception):
    pass


def _eval_accuracies(history: list[dict[str, float]]) -> list[float]:
    return [h["eval_accuracy"] for h in history if "eval_accuracy" in h]


def test_the_run_ends_with_the_best_epochs_weights(tmp_path: Path) -> None:
    model = make_model(11)
    res = train(model, TRAIN, SHIFTED, PARAMS, checkpoint_dir=tmp_path / "ckpt")
    accs = _eval_accuracies(res.history)
    assert res.global_step == 32 and res.best_step == 8 and res.best_epoch == 1
    assert accs[0] == max(accs) > accs[-1], accs
    assert res.restored_best and res.metrics["eval_accuracy"] == accs[0]
    # The same weights as a run of the same schedule stopped right after that epoch.
    done = iter(range(1, 10**6))
    short = make_model(11)
    train(short, TRAIN, SHIFTED, PARAMS, should_stop=lambda: next(done) >= 8)
    assert weights_sha(model, tmp_path) == weights_sha(short, tmp_path)
    assert (tmp_path / "ckpt" / BEST_FILE).is_file()
    # Without keep_best the last weights stay (explicit runs behave as before).
    last = make_model(11)
    plain = train(last, TRAIN, SHIFTED, TrainParams(**{**PARAMS.__dict__, "keep_best": False}))
    assert not plain.restored_best and plain.best_step == 8
    assert plain.metrics["eval_accuracy"] == accs[-1]
    assert weights_sha(last, tmp_path) != weights_sha(model, tmp_path)


def test_best_weights_in_memory_match_the_file(tmp_path: Path) -> None:
    on_disk, in_memory = make_model(11), make_model(11)
    a = train(on_disk, TRAIN, SHIFTED, PARAMS, checkpoint_dir=tmp_path / "ckpt")
    b = train(in_memory, TRAIN, SHIFTED, PARAMS)
    assert weights_sha(on_disk, tmp_path) == weights_sha(in_memory, tmp_path)
    assert a.metrics == b.metrics and a.history == b.history


def _train_until_crash(params: TrainParams, checkpoint_dir: Path, crash_step: int) -> None:
    """Train seed 11's model into ``checkpoint_dir`` until it crashes at ``crash_step``."""

    def crash(step: int, metrics: dict[str, float]) -> None:
        if step == crash_step and "loss" in metrics:
            raise Crash

    with pytest.raises(Crash):
        train(make_model(11), TRAIN, SHIFTED, params, checkpoint_dir=checkpoint_dir,
              on_metrics=crash)


@pytest.mark.parametrize(("crash_step", "newest_checkpoint"), [(9, 6), (13, 12)])
def test_a_run_killed_around_a_new_best_resumes_to_the_same_weights(
        tmp_path: Path, crash_step: int, newest_checkpoint: int) -> None:
    """Step 9: the best (step 8) file is written, the newest checkpoint is step 6, so the
    resume replays that eval and rewrites the file. Step 13: resumed from step 12, after it."""
    full = make_model(11)
    res_a = train(full, TRAIN, SHIFTED, PARAMS, checkpoint_dir=tmp_path / "a")

    _train_until_crash(PARAMS, tmp_path / "b", crash_step)
    assert (tmp_path / "b" / BEST_FILE).is_file()
    assert list_checkpoints(tmp_path / "b")[-1][0] == newest_checkpoint
    resumed = make_model(999)  # other initial weights: everything must come back
    res_b = train(resumed, TRAIN, SHIFTED, PARAMS, checkpoint_dir=tmp_path / "b")
    assert res_b.resumed_from_step is not None
    assert weights_sha(resumed, tmp_path) == weights_sha(full, tmp_path)
    assert res_b.metrics == res_a.metrics and res_b.history == res_a.history
    assert (res_b.best_step, res_b.best_epoch) == (res_a.best_step, res_a.best_epoch) == (8, 1)


def test_kept_weights_of_another_step_are_refused(tmp_path: Path) -> None:
    model = make_model(1)
    store = _BestWeights(tmp_path)
    store.save(model, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST_FILE]  # no temporary left
    with pytest.raises(RuntimeError, match="holds step 5, not the best step 6"):
        store.restore(model, 6)
    memory = _BestWeights(None)
    memory.save(model, 5)
    with pytest.raises(RuntimeError, match="step 6 were not kept"):
        memory.restore(model, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    store.restore(model, 5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_keep_best_needs_eval_data() -> None:
    with pytest.raises(ValueError, match="keep_best needs eval data"):
        train(make_model(1), TRAIN, None, PARAMS)


COOL = TrainParams(**{**PARAMS.__dict__, "epochs": 8, "early_stopping_patience": 1,
                      "cooldown_epochs": 2, "log_every_steps": 1, "warmup_ratio": 0.0})


def test_after_the_patience_the_learning_rate_falls_to_zero_then_the_run_stops(
        tmp_path: Path) -> None:
    res = train(make_model(11), TRAIN, SHIFTED, COOL, checkpoint_dir=tmp_path / "ckpt")
    # Best epoch 1; epoch 2 uses up the patience (1) at step 16; 2 epochs of cooldown.
    assert res.stopped_early and res.epochs_completed == 4 and res.global_step == 32
    assert res.cooldown_epochs == 2 and res.best_epoch == 1 and res.restored_best
    lrs = {int(h["step"]): h["learning_rate"] for h in res.history if "learning_rate" in h}
    # The schedule spans 8 epochs (64 steps): at step 16 its factor is 49/64 (step 15 is
    # the 16th step), from there linearly to 0 at step 32.
    start = COOL.learning_rate * (64 - 16) / 64
    assert lrs[16] == pytest.approx(COOL.learning_rate * (64 - 15) / 64)
    assert [lrs[s] for s in (17, 24, 32)] == pytest.approx(
        [start * 16 / 16, start * 9 / 16, start * 1 / 16])
    # Without a cooldown the same run stops at step 16.
    plain = train(make_model(11), TRAIN, SHIFTED,
                  TrainParams(**{**COOL.__dict__, "cooldown_epochs": 0}))
    assert plain.stopped_early and plain.global_step == 16 and plain.cooldown_epochs == 0


@pytest.mark.parametrize("crash_step", [17, 27])
def test_a_run_killed_in_its_cooldown_resumes_to_the_same_weights(tmp_path: Path,
                                                                   crash_step: int) -> None:
    full = make_model(11)
    res_a = train(full, TRAIN, SHIFTED, COOL, checkpoint_dir=tmp_path / "a")

    _train_until_crash(COOL, tmp_path / "b", crash_step)
    resumed = make_model(999)
    res_b = train(resumed, TRAIN, SHIFTED, COOL, checkpoint_dir=tmp_path / "b")
    assert res_b.resumed_from_step is not None
    assert weights_sha(resumed, tmp_path) == weights_sha(full, tmp_path)
    assert res_b.history == res_a.history and res_b.metrics == res_a.metrics
    assert res_b.cooldown_epochs == res_a.cooldown_epochs == 2
