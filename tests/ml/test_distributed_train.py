"""Data-parallel training: 2 gloo ranks on localhost (no Ray) against one process.

Two sessions of 2 spawned processes run everything (spawning and importing PyTorch and
transformers is most of the cost): session 1 runs the dropout-free run compared with one
process, a reference run with dropout, and a run stopped after step 3; session 2 (fresh
processes, like a restart) runs the reference again, resumes the stopped run, runs one
whose checkpoints only rank 0's clock says are due, and loses rank 1 in the middle of a
run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from clowder_ml.ml import determinism
from clowder_ml.ml.data_parallel import CollectiveFailed
from clowder_ml.ml.finetune_worker import ERROR_FILE, train_or_record_failure
from clowder_ml.ml.train_loop import TrainParams, list_checkpoints, save_weights, train
from tests.ml.test_train_loop import make_data

WORLD = 2
STOP_AT = 3

# 64 examples, batches of 7, 2 per step: 5 steps per epoch, the last micro-batch of each
# epoch has one example (so rank 1's shard is empty there); checkpoints every 2 steps.
PARAMS = TrainParams(epochs=2, learning_rate=5e-4, batch_size=7, gradient_accumulation=2,
                     warmup_steps=2, seed=3, checkpoint_every_steps=2, log_every_steps=1)


def make_model(seed: int, dropout: float) -> BertForSequenceClassification:
    determinism.setup(seed, 1)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=3,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        max_position_embeddings=32)
    return BertForSequenceClassification(config)


def _run(out: Path, name: str, rank: int, dropout: float, ckpt: Path | None,
         stop_at: int | None = None, params: TrainParams = PARAMS) -> None:
    """One training run; every rank writes its weights' digest, rank 0 the weights too."""
    model = make_model(0, dropout)
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return stop_at is not None and calls >= stop_at

    # Only rank 0 asks to stop: the ranks must still agree on the step.
    stop = should_stop if rank == 0 and stop_at is not None else None
    metrics: list[tuple[int, dict[str, float]]] = []
    result = train(model, make_data(64, 0), make_data(24, 1), params, checkpoint_dir=ckpt,
                   should_stop=stop, on_metrics=lambda s, m: metrics.append((s, m)))
    path = out / f"{name}-rank{rank}.safetensors"
    save_weights(model, path)
    (out / f"{name}-rank{rank}.json").write_text(json.dumps({
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "history": result.history, "global_step": result.global_step,
        "interrupted": result.interrupted, "resumed_from_step": result.resumed_from_step,
        "metrics": result.metrics, "metric_calls": len(metrics),
        "checkpoints": result.checkpoints}))


def _session(rank: int, store: str, out: str, session: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    try:
        o = Path(out)
        if session == 1:
            _run(o, "nodrop", rank, 0.0, None)
            _run(o, "ref1", rank, 0.1, o / "ckpt-ref1")
            _run(o, "stopped", rank, 0.1, o / "ckpt-resume", stop_at=STOP_AT)
        else:
            _run(o, "ref2", rank, 0.1, o / "ckpt-ref2")
            _run(o, "resumed", rank, 0.1, o / "ckpt-resume")
            # Only rank 0's clock says a checkpoint is due (after every step): a checkpoint is
            # a collective, so the ranks must agree, or they would deadlock.
            _run(o, "timed", rank, 0.1, o / "ckpt-timed", params=dataclasses.replace(
                PARAMS, checkpoint_every_steps=None,
                checkpoint_every_s=1e-9 if rank == 0 else None))
            _peer_lost(o, rank)
    finally:
        dist.destroy_process_group()


def _peer_lost(out: Path, rank: int) -> None:
    """Rank 1 dies after step 2 (as a killed Ray Train worker would); rank 0 must see
    ``CollectiveFailed`` -- for Ray Train to restart the group -- not a training failure."""
    if rank == 1:
        def die() -> bool:
            os._exit(0)  # no teardown, no goodbye to the peer: like SIGKILL

        train(make_model(0, 0.0), make_data(64, 0), None, PARAMS, should_stop=die)
        return
    fail_out = out / "peer-lost-out"
    try:
        recorded = train_or_record_failure(
            {"output_dir": str(fail_out)},
            lambda c: train(make_model(0, 0.0), make_data(64, 0), None, PARAMS))
        outcome = f"returned {recorded}"
    except CollectiveFailed as exc:
        outcome = f"CollectiveFailed: {exc}"
    (out / "peer-lost.json").write_text(json.dumps({
        "outcome": outcome, "error_json": (fail_out / ERROR_FILE).exists()}))


def _spawn(tmp: Path, session: int) -> None:
    store = tmp / f"store-{session}"
    mp.spawn(_session, args=(str(store), str(tmp), session), nprocs=WORLD, join=True)


def _result(out: Path, name: str, rank: int = 0) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / f"{name}-rank{rank}.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    _spawn(out, 1)
    _spawn(out, 2)
    # The one-process run of the dropout-free case, in this process.
    model = make_model(0, 0.0)
    result = train(model, make_data(64, 0), make_data(24, 1), PARAMS)
    save_weights(model, out / "single.safetensors")
    (out / "single.json").write_text(json.dumps({"history": result.history,
                                                 "metrics": result.metrics}))
    return out


def test_two_ranks_match_one_process(runs: Path) -> None:
    single = load_file(str(runs / "single.safetensors"))
    dp = load_file(str(runs / "nodrop-rank0.safetensors"))
    assert single.keys() == dp.keys()
    worst = max(float((single[k] - dp[k]).abs().max()) for k in single)
    moved = max(float((single[k] - make_model(0, 0.0).state_dict()[k]).abs().max())
                for k in single)
    # The float sums differ (per-rank padding, the all-reduce), nothing else does.
    assert worst < 1e-6 < 1e-4 < moved, (worst, moved)
    one = json.loads((runs / "single.json").read_text())
    two = _result(runs, "nodrop")
    losses1 = [h["loss"] for h in one["history"] if "loss" in h]
    losses2 = [h["loss"] for h in two["history"] if "loss" in h]
    assert len(losses1) == len(losses2) == PARAMS.epochs * 5
    assert losses1 == pytest.approx(losses2, abs=1e-4)
    assert one["metrics"]["eval_loss"] == pytest.approx(two["metrics"]["eval_loss"], abs=1e-4)
    # Weights are identical on both ranks; only rank 0 reports.
    assert two["sha256"] == _result(runs, "nodrop", 1)["sha256"]
    assert two["metric_calls"] > 0 and _result(runs, "nodrop", 1)["metric_calls"] == 0


def test_two_rank_runs_are_bit_identical(runs: Path) -> None:
    a, b = _result(runs, "ref1"), _result(runs, "ref2")
    assert a["global_step"] == b["global_step"] == PARAMS.epochs * 5
    assert a["sha256"] == b["sha256"]
    assert a["history"] == b["history"]
    assert a["sha256"] != _result(runs, "nodrop")["sha256"]  # dropout did draw


def test_two_rank_run_resumes_to_the_same_weights(runs: Path) -> None:
    stopped, resumed = _result(runs, "stopped"), _result(runs, "resumed")
    assert stopped["interrupted"] and stopped["global_step"] == STOP_AT
    assert _result(runs, "stopped", 1)["interrupted"]  # rank 1 stopped with rank 0
    assert resumed["resumed_from_step"] == STOP_AT and not resumed["interrupted"]
    ref = _result(runs, "ref1")
    assert resumed["sha256"] == ref["sha256"]
    assert _result(runs, "resumed", 1)["sha256"] == ref["sha256"]
    assert resumed["history"] == ref["history"]


def test_ranks_agree_on_checkpoints_due_by_rank_0s_clock(runs: Path) -> None:
    timed, ref = _result(runs, "timed"), _result(runs, "ref1")
    assert timed["sha256"] == _result(runs, "timed", 1)["sha256"] == ref["sha256"]
    assert timed["checkpoints"]["written"] == PARAMS.epochs * 5  # one after every step
    assert [s for s, _ in list_checkpoints(runs / "ckpt-timed")] == [9, 10]
    assert _result(runs, "timed", 1)["checkpoints"] == {}  # only rank 0 writes


def test_one_process_refuses_a_two_rank_checkpoint(runs: Path, tmp_path: Path) -> None:
    # Another world size would be another trajectory: resuming must not pretend otherwise.
    ckpt = tmp_path / "ckpt"
    shutil.copytree(runs / "ckpt-ref2", ckpt)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="written by 2 worker"):
        train(make_model(0, 0.1), make_data(64, 0), None, PARAMS, checkpoint_dir=ckpt)


def test_a_lost_peer_is_not_a_training_failure(runs: Path) -> None:
    # gloo raises a plain RuntimeError, which the worker would record as the training's own
    # failure (no retry): the job would fail instead of Ray Train resuming it.
    lost = json.loads((runs / "peer-lost.json").read_text())
    assert lost["outcome"].startswith("CollectiveFailed"), lost
    assert not lost["error_json"]
