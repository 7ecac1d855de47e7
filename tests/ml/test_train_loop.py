"""The trusted training loop: bit-identical reruns, resume == uninterrupted, metrics."""

from __future__ import annotations

import hashlib
import pickletools
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from clowder_ml.ml import determinism
from clowder_ml.ml.metrics import accuracy, confusion_matrix, macro_f1
from clowder_ml.ml.train_loop import (
    STATE_FILE,
    WEIGHTS_FILE,
    TrainParams,
    epoch_order,
    evaluate,
    list_checkpoints,
    lr_factor,
    save_weights,
    train,
)

# --------------------------------------------------------------------------- fixtures


class FakeData:
    """In-memory data source with the protocol of the Arrow-backed one."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: list[int]) -> dict[str, list[Any]]:
        return {
            "input_ids": [list(self.ids[i]) for i in indices],
            "attention_mask": [[1] * len(self.ids[i]) for i in indices],
            "label": [self.labels[i] for i in indices],
        }


def make_data(n: int, seed: int) -> FakeData:
    """Separable: class c uses only tokens from its own range; lengths 3..12; pad id 0."""
    rng = random.Random(seed)
    ids, labels = [], []
    for i in range(n):
        c = i % 3
        length = rng.randint(3, 12)
        ids.append([1] + [rng.randrange(4 + 30 * c, 34 + 30 * c) for _ in range(length - 1)])
        labels.append(c)
    return FakeData(ids, labels)


TRAIN = make_data(64, 0)
EVAL = make_data(24, 1)


def make_model(seed: int) -> BertForSequenceClassification:
    determinism.setup(seed, 1)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        hidden_dropout_prob=0.1,
        max_position_embeddings=32,
    )
    return BertForSequenceClassification(config)


def weights_sha(model: torch.nn.Module, tmp: Path) -> str:
    path = tmp / "final.safetensors"
    save_weights(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


BASE = TrainParams(
    epochs=2,
    learning_rate=2e-3,
    batch_size=8,
    warmup_ratio=0.1,
    weight_decay=0.01,
    max_grad_norm=1.0,
    seed=11,
    log_every_steps=1,
)


# --------------------------------------------------------------------------- determinism


def test_same_seed_identical_weights_and_metrics_different_seed_differs(tmp_path: Path) -> None:
    shas, results = [], []
    for seed in (11, 11, 12):
        params = TrainParams(**{**BASE.__dict__, "seed": seed})
        model = make_model(seed)
        results.append(train(model, TRAIN, EVAL, params, checkpoint_dir=None))
        shas.append(weights_sha(model, tmp_path))
    assert shas[0] == shas[1]
    assert results[0].metrics == results[1].metrics
    assert results[0].history == results[1].history
    assert shas[2] != shas[0]


class Crash(Exception):
    pass


def test_resume_after_interruption_gives_identical_weights(tmp_path: Path) -> None:
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 3})
    # A: uninterrupted, 2 epochs x 8 steps, checkpoints at 3, 6, ..., 15.
    model_a = make_model(11)
    res_a = train(model_a, TRAIN, EVAL, params, checkpoint_dir=tmp_path / "a")
    sha_a = weights_sha(model_a, tmp_path)
    assert res_a.global_step == 16

    # B: crashes at step 5 (after the step-3 checkpoint, so steps 4-5 are replayed).
    def crash(step: int, metrics: dict[str, float]) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train(make_model(11), TRAIN, EVAL, params, checkpoint_dir=tmp_path / "b", on_metrics=crash)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3]

    # Fresh model with different init and different global RNG state: all must be restored.
    model_b = make_model(999)
    torch.rand(17)
    random.random()
    res_b = train(model_b, TRAIN, EVAL, params, checkpoint_dir=tmp_path / "b")
    assert res_b.resumed_from_step == 3
    assert weights_sha(model_b, tmp_path) == sha_a
    assert res_b.metrics == res_a.metrics
    assert res_b.history == res_a.history


def test_checkpoints_due_by_time_resume_alike_and_report_their_cost(tmp_path: Path) -> None:
    model_a = make_model(11)
    train(model_a, TRAIN, EVAL, BASE)  # no checkpoint folder: none written
    sha_a = weights_sha(model_a, tmp_path)
    # Due after every step (each takes far more than a nanosecond); a crash at step 5.
    every_step = TrainParams(**{**BASE.__dict__, "checkpoint_every_s": 1e-9})

    def crash(step: int, metrics: dict[str, float]) -> None:
        if step == 5:  # metrics come before the step's checkpoint
            raise Crash

    with pytest.raises(Crash):
        train(make_model(11), TRAIN, EVAL, every_step, checkpoint_dir=tmp_path / "b",
              on_metrics=crash)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3, 4]
    model_b = make_model(999)
    res_b = train(model_b, TRAIN, EVAL, every_step, checkpoint_dir=tmp_path / "b")
    assert res_b.resumed_from_step == 4 and weights_sha(model_b, tmp_path) == sha_a
    ck = res_b.checkpoints
    assert ck["written"] == 16 - 4 and ck["loop_seconds"] > 0 and ck["write_seconds"] > 0
    # Not due within the run: nothing written, and the result says so.
    rare = TrainParams(**{**BASE.__dict__, "checkpoint_every_s": 3600.0})
    res_c = train(make_model(11), TRAIN, EVAL, rare, checkpoint_dir=tmp_path / "c")
    assert res_c.checkpoints == {"written": 0, "loop_seconds": 0.0, "write_seconds": 0.0}
    assert list_checkpoints(tmp_path / "c") == []
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        TrainParams(checkpoint_every_s=0)


def test_resume_after_should_stop_mid_epoch_and_across_epoch_boundary(tmp_path: Path) -> None:
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 3, "log_every_steps": 4})
    model_a = make_model(11)
    res_a = train(model_a, TRAIN, EVAL, params)
    sha_a = weights_sha(model_a, tmp_path)

    model_b = make_model(11)
    stops = iter(range(1, 100))
    # Stop after optimizer step 5 (mid epoch 0): checkpoint written on stop.
    res = train(
        model_b,
        TRAIN,
        EVAL,
        params,
        checkpoint_dir=tmp_path / "b",
        should_stop=lambda: next(stops) == 5,
    )
    assert res.interrupted and res.global_step == 5
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3, 5]
    # Stop again at global step 8 (end of epoch 0, before its eval).
    calls = iter(range(6, 100))
    res = train(
        make_model(5),
        TRAIN,
        EVAL,
        params,
        checkpoint_dir=tmp_path / "b",
        should_stop=lambda: next(calls) == 8,
    )
    assert res.interrupted and res.global_step == 8
    model_c = make_model(6)
    res_c = train(model_c, TRAIN, EVAL, params, checkpoint_dir=tmp_path / "b")
    assert weights_sha(model_c, tmp_path) == sha_a
    assert res_c.history == res_a.history
    assert res_c.metrics == res_a.metrics


def test_epoch_order_is_pure_function_of_seed_and_epoch() -> None:
    a = epoch_order(64, 11, 0)
    torch.rand(100)  # global RNG draws must not matter
    assert epoch_order(64, 11, 0) == a
    assert sorted(a) == list(range(64))
    assert epoch_order(64, 11, 1) != a
    assert epoch_order(64, 12, 0) != a


# --------------------------------------------------------------------------- behaviour


def test_loss_decreases_and_model_learns_separable_data() -> None:
    params = TrainParams(
        **{**BASE.__dict__, "epochs": 6, "learning_rate": 5e-3, "log_every_steps": 8}
    )
    logs: list[tuple[int, dict[str, float]]] = []
    res = train(make_model(11), TRAIN, EVAL, params, on_metrics=lambda s, m: logs.append((s, m)))
    losses = [m["loss"] for _, m in logs if "loss" in m]
    assert len(losses) == 6
    assert losses[-1] < losses[0] * 0.5, losses
    assert res.metrics["eval_accuracy"] >= 0.9, res.metrics
    assert all(m["samples_per_s"] > 0 and m["learning_rate"] >= 0 for _, m in logs if "loss" in m)
    evals = [m for _, m in logs if "eval_loss" in m]
    assert len(evals) == 6 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert set(evals[0]) == {"eval_loss", "eval_accuracy", "eval_macro_f1"}
    assert res.epochs_completed == 6 and res.train_samples_per_s > 0


def test_early_stopping_stops() -> None:
    # lr 0 -> the eval metric never improves after the first epoch.
    params = TrainParams(
        **{
            **BASE.__dict__,
            "epochs": 10,
            "learning_rate": 0.0,
            "early_stopping_patience": 2,
            "metric": "macro_f1",
        }
    )
    res = train(make_model(11), TRAIN, EVAL, params)
    assert res.stopped_early
    assert res.epochs_completed == 3
    assert res.global_step == 24


def test_gradient_accumulation_and_max_steps() -> None:
    params = TrainParams(**{**BASE.__dict__, "batch_size": 4, "gradient_accumulation": 2})
    res = train(make_model(11), TRAIN, None, params)
    assert res.global_step == 16  # 16 micro-batches per epoch / 2 = 8 steps, 2 epochs
    assert res.metrics == {}
    params = TrainParams(
        **{**BASE.__dict__, "batch_size": 4, "gradient_accumulation": 2, "max_steps": 5}
    )
    res = train(make_model(11), TRAIN, EVAL, params)
    assert res.global_step == 5 and res.epochs_completed == 0
    assert set(res.metrics) == {"eval_loss", "eval_accuracy", "eval_macro_f1"}


_ALLOWED_GLOBALS = ("torch ", "torch._utils ", "collections OrderedDict")


def test_checkpoints_weights_only_no_arbitrary_pickles_keep_last_two(tmp_path: Path) -> None:
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 3})
    train(make_model(11), TRAIN, EVAL, params, checkpoint_dir=tmp_path)
    ckpts = list_checkpoints(tmp_path)
    assert [s for s, _ in ckpts] == [12, 15]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for _, p in ckpts]
    for _, path in ckpts:
        assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS_FILE, STATE_FILE])
        state = torch.load(path / STATE_FILE, weights_only=True)
        assert set(state) >= {"optimizer", "rng", "progress", "params", "schedule"}
        # Every global the pickle references is a torch tensor rebuild helper or OrderedDict.
        with zipfile.ZipFile(path / STATE_FILE) as zf:
            pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(pkl)
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "STACK_GLOBAL", "INST"):
                assert arg is None or str(arg).startswith(_ALLOWED_GLOBALS), arg


def test_resume_refuses_changed_params(tmp_path: Path) -> None:
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 3, "max_steps": 3})
    train(make_model(11), TRAIN, None, params, checkpoint_dir=tmp_path)
    changed = TrainParams(**{**params.__dict__, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="learning_rate"):
        train(make_model(11), TRAIN, None, changed, checkpoint_dir=tmp_path)


def test_evaluate_maps_sorted_batches_back_to_original_order() -> None:
    model = make_model(3)
    out = evaluate(model, EVAL, batch_size=5)
    single = [
        evaluate(model, FakeData([EVAL.ids[i]], [EVAL.labels[i]]), 1)["predictions"][0]
        for i in range(len(EVAL))
    ]
    assert out["predictions"] == single
    assert out["accuracy"] == accuracy(EVAL.labels, out["predictions"])
    assert out["confusion_matrix"] == confusion_matrix(EVAL.labels, out["predictions"], 3)
    assert not model.training


def test_no_weight_decay_on_bias_and_layernorm() -> None:
    from clowder_ml.ml.train_loop import _param_groups

    model = make_model(1)
    decay, plain = _param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(n.endswith("bias") or "LayerNorm" in n for n in plain_names)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decay_names)
    assert "classifier.weight" in decay_names


def test_lr_schedule() -> None:
    assert [round(lr_factor(s, 2, 6), 4) for s in range(7)] == [
        0.3333,
        0.6667,
        1.0,
        0.75,
        0.5,
        0.25,
        0.0,
    ]
    assert lr_factor(0, 0, 4) == 1.0


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed() -> None:
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    assert accuracy(y_true, y_pred) == 4 / 6
    assert confusion_matrix(y_true, y_pred, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # F1: class0 2*2/(4+0+1)=0.8, class1 2/(2+1+1)=0.5, class2 2/(2+1+0)=2/3
    assert macro_f1(y_true, y_pred, 3) == float((0.8 * 15 + 0.5 * 15 + 10) / 45)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # A class absent from both counts as 0 in the macro average.
    assert macro_f1([0, 1], [0, 1], 3) == 2 / 3
    assert macro_f1([], [], 2) == 0.0 and accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError):
        accuracy([0], [0, 1])


_RESUME_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_train_loop as t
params = t.TrainParams(**{**t.BASE.__dict__, "checkpoint_every_steps": 3})
model = t.make_model(4242)
res = t.train(model, t.TRAIN, t.EVAL, params, checkpoint_dir=Path(sys.argv[2]))
print(res.resumed_from_step, t.weights_sha(model, Path(sys.argv[2]).parent))
"""


def test_resume_in_a_fresh_process_matches_uninterrupted(tmp_path: Path) -> None:
    import subprocess
    import sys

    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 3})
    model_a = make_model(11)
    train(model_a, TRAIN, EVAL, params)
    sha_a = weights_sha(model_a, tmp_path)
    stops = iter(range(1, 100))
    train(
        make_model(11),
        TRAIN,
        EVAL,
        params,
        checkpoint_dir=tmp_path / "b",
        should_stop=lambda: next(stops) == 7,
    )
    # Drop the stop-time checkpoint so the new process replays from step 6.
    import shutil

    shutil.rmtree(list_checkpoints(tmp_path / "b")[-1][1])
    out = subprocess.run(
        [sys.executable, "-c", _RESUME_SCRIPT, str(Path(__file__).parent), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == ["6", sha_a]


def test_checkpoint_written_in_background_holds_the_state_of_its_step(tmp_path: Path) -> None:
    """Checkpoints are written on a thread while training goes on: each must still hold the
    weights of its own step (a snapshot), and resuming from one gives the uninterrupted
    result."""
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 4})
    full = make_model(11)
    train(full, TRAIN, EVAL, params, checkpoint_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    step, path = ckpts[0]
    assert step < 16  # an intermediate checkpoint, written while later steps ran
    short = make_model(11)
    done = iter(range(1, 10**6))  # stop (same schedule) once `step` steps are done
    train(short, TRAIN, EVAL, params, should_stop=lambda: next(done) >= step)
    saved = load_file(str(path / WEIGHTS_FILE))
    live = short.state_dict()
    assert saved.keys() <= live.keys()
    for name, tensor in saved.items():
        assert torch.equal(tensor, live[name]), name


def test_a_failed_background_checkpoint_write_fails_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint folder should be")
    params = TrainParams(**{**BASE.__dict__, "checkpoint_every_steps": 2})
    with pytest.raises(OSError):
        train(make_model(11), TRAIN, EVAL, params, checkpoint_dir=blocker / "ckpt")
