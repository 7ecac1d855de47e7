#!/usr/bin/env python3
"""Benchmark: fine-tune wall time, ours (through the API) versus a plain HF ``Trainer`` script
and versus Ray ``TorchTrainer`` wrapping the same ``Trainer``.

One run does all three with the same data and hyper-parameters, on ONE local Ray head
(``EmbeddedRayHead``, 2 CPUs, token auth, in a short ``/tmp`` folder) and one ``clowder-ml
serve`` process whose job engine uses it (``engine_env`` from the tests). The head and the
server are up for all three sides, so they share the same background load. ray_trainer runs
once; plain and ours run ``--repeat`` times (3) each, alternating (plain, ours, plain, ...),
and the medians count: on this 2-vCPU VM the same run varies by +-15 % from minute to
minute, and alternating spreads that drift over both sides. Before each of ours the node's
cache of tokenized data is emptied, so every run tokenizes, as plain does.

Data: ``--n`` short generated English sentences (seeded), two labels (``pos``/``neg``), one
CSV (``text,label``). Model: the built-in ``minilm-l6`` (all-MiniLM-L6-v2) with a fresh
2-label head. Hyper-parameters: ``--epochs`` (1), max_length 64, batch 16, learning rate
5e-5, seed 42, no warm-up, and NO validation split on any side (ours gets
``validation_split=0``; the HF scripts get no eval set), so every side trains on all ``n``
rows and evaluates nothing. ``--max-steps`` caps the optimizer steps on every side.
``OMP_NUM_THREADS=2`` on every side (ours: the dispatcher sets it from ``cpus=2``).

- plain: a temp script run as ``python script.py config.json`` (a subprocess, so imports
  count as for the others): ``AutoTokenizer`` + ``AutoModelForSequenceClassification`` from
  the minilm folder, ``Trainer`` with ``TrainingArguments(num_train_epochs, batch 16, lr 5e-5,
  seed 42, report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0,
  logging_steps=50)``, tokenized with truncation at 64 and padded per batch
  (``DataCollatorWithPadding``, the Trainer's default with a tokenizer), then
  ``save_model``. Wall time: ``Popen`` to exit.
- ray_trainer: the pattern of earlier Clowder extractors. The same script in ``ray`` mode,
  submitted as a Ray job (``JobSubmissionClient.submit_job``, ``entrypoint_num_cpus=0``) on
  the head: its driver calls ``ray.init()`` and ``TorchTrainer(train_loop_per_worker,
  ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 2}))``, whose
  worker runs the same ``Trainer`` code. Wall time: ``submit_job`` to the job SUCCEEDED.
- ours: the CSV uploaded into a dataset (not timed), then ``Client.submit_job(
  "text-classification-finetune", datasets=[...], params={...}, cpus=2)`` and ``wait_job``
  until it succeeded with the model version registered (``result["model"]``). Wall time:
  just before ``submit_job`` to that answer (polled every 0.2 s). The job's events, with
  times relative to the submit, and the worker's ``seconds`` give the breakdown.

Target (from the issue): ours <= 1.10 x plain (medians). The last line printed is ``RESULT key=value
...``; when a step fails it is ``RESULT failed_step=... error="..." target_met=false`` (and
the exit status 1). The server, the head and the temp folders are removed on exit, including
on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clowder_ml.client import Client  # noqa: E402
from clowder_ml.engine.ray_cluster import EmbeddedRayHead  # noqa: E402
from clowder_ml.ml.models import builtin_dir  # noqa: E402

with warnings.catch_warnings():  # tests.conftest imports fastapi's TestClient (deprecation noise)
    warnings.simplefilter("ignore")
    from tests.conftest import ServerProcess
    from tests.engine.conftest import engine_env

THREADS = 2
MAX_LENGTH = 64
BATCH = 16
LR = 5e-5
SEED = 42
POLL_S = 0.2
SERVER_START_S = 300.0  # clowder-ml serve up and ready (migrations, first imports)
RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

POS = ("great", "wonderful", "excellent", "lovely", "superb", "delightful", "fine", "good")
NEG = ("awful", "terrible", "boring", "dreadful", "poor", "bad", "weak", "dull")
NOUNS = ("movie", "meal", "service", "book", "hotel", "concert", "game", "trip", "show")
FILLER = ("really", "quite", "honestly", "overall", "today", "again", "very", "so")

# The HF side, run as a script: ``python hf_train.py config.json`` (plain) or
# ``... config.json ray`` (TorchTrainer around the same code). Kept as text so both sides
# import exactly the same things a user's script would.
HF_SCRIPT = r'''
import csv, json, sys, time

T0 = time.time()


def train_fn(cfg):
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              Trainer, TrainingArguments)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with open(cfg["csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labels = sorted({r["label"] for r in rows})
    label2id = {name: i for i, name in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(cfg["base"])
    enc = tok([r["text"] for r in rows], truncation=True, max_length=cfg["max_length"])
    data = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": label2id[r["label"]]} for i, r in enumerate(rows)]

    class ListDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    model = AutoModelForSequenceClassification.from_pretrained(
        cfg["base"], num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id=label2id)
    args = TrainingArguments(
        output_dir=cfg["out"], num_train_epochs=cfg["epochs"], max_steps=cfg["max_steps"],
        per_device_train_batch_size=cfg["batch_size"], learning_rate=cfg["lr"],
        seed=cfg["seed"], report_to=[], save_strategy="no", use_cpu=True,
        dataloader_num_workers=0, logging_steps=50, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(),
                      processing_class=tok)
    out = trainer.train()
    trainer.save_model(cfg["out"])
    return {"train_runtime": out.metrics["train_runtime"],
            "threads": torch.get_num_threads(), "steps": out.global_step}


def ray_loop(cfg):
    import ray.train

    t_loop = time.time()
    res = train_fn(cfg)
    res["worker_s"] = time.time() - t_loop  # train_loop_per_worker: load, train, save
    open(cfg["result"] + ".worker", "w").write(json.dumps(res))
    ray.train.report(res)


def main():
    cfg = json.load(open(sys.argv[1]))
    mode = sys.argv[2] if len(sys.argv) > 2 else "plain"
    if mode == "plain":
        res = train_fn(cfg)
    else:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        ray.init()
        trainer = TorchTrainer(
            ray_loop, train_loop_config=cfg,
            scaling_config=ScalingConfig(num_workers=1, use_gpu=False,
                                         resources_per_worker={"CPU": cfg["threads"]}),
            run_config=RunConfig(name="bench", storage_path=cfg["ray_storage"]))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        res = json.load(open(cfg["result"] + ".worker"))  # Ray Train V2 keeps no metrics
    res["script_s"] = time.time() - T0
    open(cfg["result"], "w").write(json.dumps(res))
    print("BENCH", json.dumps(res), flush=True)


main()
'''


def log(msg: str) -> None:
    print(msg, flush=True)


def ts(value: str) -> float:
    """An API timestamp (ISO 8601; naive means UTC) as epoch seconds."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def make_csv(path: Path, n: int, seed: int) -> None:
    """``n`` short sentences (5-10 words), label ``pos``/``neg`` by the adjective, balanced."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["text", "label"])
        for i in range(n):
            pos = i % 2 == 0
            adj = rng.choice(POS if pos else NEG)
            extra = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 4)))
            text = f"the {rng.choice(NOUNS)} was {extra} {adj}".replace("  ", " ")
            w.writerow([text + ".", "pos" if pos else "neg"])


@dataclass
class Side:
    name: str
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)


def hf_config(args: argparse.Namespace, csv_path: Path, workdir: Path, tag: str
              ) -> Path:
    cfg = {"csv": str(csv_path), "base": str(builtin_dir("minilm-l6")),
           "out": str(workdir / f"{tag}-out"), "epochs": args.epochs,
           "max_steps": args.max_steps or -1, "batch_size": BATCH, "lr": LR, "seed": SEED,
           "max_length": MAX_LENGTH, "threads": THREADS,
           "ray_storage": str(workdir / "ray-results"), "result": str(workdir / f"{tag}.json")}
    path = workdir / f"{tag}-config.json"
    path.write_text(json.dumps(cfg))
    return path


def thread_env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
            "OPENBLAS_NUM_THREADS": str(THREADS)}


def run_plain(args: argparse.Namespace, script: Path, csv_path: Path, workdir: Path) -> Side:
    cfg = hf_config(args, csv_path, workdir, "plain")
    env = {**os.environ, **thread_env()}
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script), str(cfg)], env=env,
                          capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"plain script failed:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-3000:]}")
    info = json.loads((workdir / "plain.json").read_text())
    return Side("plain", wall, info)


def run_ray_trainer(args: argparse.Namespace, head: EmbeddedRayHead, script: Path,
                    csv_path: Path, workdir: Path) -> Side:
    from ray.job_submission import JobSubmissionClient

    cfg = hf_config(args, csv_path, workdir, "ray")
    client = JobSubmissionClient(head.address,
                                 headers={"Authorization": f"Bearer {head.auth_token}"})
    entry = f"{sys.executable} {script} {cfg} ray"
    t0 = time.time()
    sid = client.submit_job(entrypoint=entry, entrypoint_num_cpus=0,
                            runtime_env={"env_vars": thread_env()})
    deadline = time.monotonic() + args.timeout
    while True:
        status = str(client.get_job_status(sid)).split(".")[-1]
        if status in RAY_TERMINAL:
            break
        if time.monotonic() > deadline:
            client.stop_job(sid)
            raise RuntimeError(f"Ray job {sid} did not end in {args.timeout:g} s")
        time.sleep(POLL_S)
    wall = time.time() - t0
    if status != "SUCCEEDED":
        raise RuntimeError(f"Ray job {sid} {status}:\n{client.get_job_logs(sid)[-4000:]}")
    info = json.loads((workdir / "ray.json").read_text())
    return Side("ray_trainer", wall, info)


def run_ours(args: argparse.Namespace, client: Client, dataset: str) -> Side:
    params: dict[str, Any] = {
        "model_name": "bench-ft", "base_model": "minilm-l6", "epochs": args.epochs,
        "max_length": MAX_LENGTH, "batch_size": BATCH, "learning_rate": LR, "seed": SEED,
        "validation_split": 0.0}
    if args.max_steps:
        params["max_steps"] = args.max_steps
    t0 = time.time()
    job = client.submit_job("text-classification-finetune", datasets=[dataset],
                            params=params, cpus=THREADS)
    job = client.wait_job(job["id"], timeout_s=args.timeout, poll_s=POLL_S)
    wall = time.time() - t0
    result = job.get("result") or {}
    if job["state"] != "succeeded" or "model" not in result:
        raise RuntimeError(f"our job {job['id']} {job['state']}: {job.get('reason')}\n"
                           f"{job.get('log_tail') or ''}")
    events = [(ts(e["at"]) - t0, str(e["message"])) for e in client.job_events(job["id"])]
    info = {"events": events, "worker_s": result.get("seconds"),
            "samples_per_s": (result.get("metrics") or {}).get("train_samples_per_s"),
            "started_s": ts(job["started_at"]) - t0 if job.get("started_at") else None,
            "ended_s": ts(job["ended_at"]) - t0 if job.get("ended_at") else None,
            "model": result["model"], "launcher": result.get("launcher")}
    return Side("ours", wall, info)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="training rows (default 2000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps (all sides)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of plain and of ours, alternating; medians count (default 3)")
    p.add_argument("--timeout", type=float, default=1200.0, help="per side, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temp folders (debugging)")
    return p.parse_args(argv)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def median_side(runs: list[Side]) -> Side:
    """The run with the median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r.wall_s)[(len(runs) - 1) // 2]


def report(plains: list[Side], ray_side: Side, ourses: list[Side], samples: int, n: int,
           epochs: int) -> None:
    med_plain, med_ours = median_side(plains), median_side(ourses)
    plain, ray, ours = med_plain.wall_s, ray_side.wall_s, med_ours.wall_s
    ratio_o, ratio_r = ours / plain, ray / plain
    met = ratio_o <= 1.10
    digests = {str((o.info.get("model") or {}).get("digest")) for o in ourses}
    log("")
    log(f"fine-tune minilm-l6, {n} rows x {epochs} epoch(s) "
        f"({samples} samples), batch {BATCH}, max_length {MAX_LENGTH}, {THREADS} threads; "
        f"plain and ours: median of {len(ourses)} alternating runs")
    log(f"  {'':14s} {'wall s':>8s} {'samples/s':>10s} {'vs plain':>9s}  "
        f"{'in-process train s':>18s}  runs (wall s)")
    for name, s, runs in (("plain", med_plain, plains), ("ray_trainer", ray_side, [ray_side]),
                          ("ours", med_ours, ourses)):
        inner = s.info.get("train_runtime") or s.info.get("worker_s")
        inner_s = f"{inner:.1f}" if isinstance(inner, int | float) else ""
        log(f"  {name:14s} {s.wall_s:8.1f} {samples / s.wall_s:10.1f} "
            f"{s.wall_s / plain:9.2f}  {inner_s:>18}  "
            + " ".join(f"{r.wall_s:.1f}" for r in runs))
    o = med_ours.info
    log("  ours (the median run), job events (s after submit):")
    for at, msg in o["events"]:
        log(f"    {at:7.2f}  {msg[:100]}")
    log(f"    started_at {o['started_s']:.2f}, ended_at {o['ended_s']:.2f}, "
        f"worker seconds {o['worker_s']}, launcher {o['launcher']}, model {o['model']}")
    same = "the same weights" if len(digests) == 1 else "DIFFERENT weights"
    log(f"  ours' {len(ourses)} runs made {same} ({', '.join(d[:12] for d in sorted(digests))})")
    log(f"  ours/plain {ratio_o:.2f}, ray_trainer/plain {ratio_r:.2f}; target ours <= 1.10 x "
        f"plain -> {'met' if met else 'NOT met'}")
    log(f"RESULT plain_s={plain:.1f} ray_trainer_s={ray:.1f} ours_s={ours:.1f} "
        f"ours_vs_plain={ratio_o:.2f} ray_trainer_vs_plain={ratio_r:.2f} n={n} "
        f"repeat={len(ourses)} same_weights={str(len(digests) == 1).lower()} "
        f"target_met={str(met).lower()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n <= 0 or args.epochs <= 0 or args.repeat <= 0:
        raise SystemExit("--n, --epochs and --repeat must be positive")
    signal.signal(signal.SIGTERM, _sigterm)
    ray_dir = Path(tempfile.mkdtemp(prefix="cml-ray-", dir="/tmp"))
    workdir = Path(tempfile.mkdtemp(prefix="cml-ft-bench-"))
    head: EmbeddedRayHead | None = None
    server: ServerProcess | None = None
    client: Client | None = None
    step = "writing the data"
    try:
        csv_path = workdir / "train.csv"
        make_csv(csv_path, args.n, SEED)
        script = workdir / "hf_train.py"
        script.write_text(HF_SCRIPT)
        step = "starting the Ray head"
        log(f"starting a Ray head in {ray_dir}")
        head = EmbeddedRayHead(ray_dir, num_cpus=2).start()
        step = "starting clowder-ml serve"
        server = ServerProcess(workdir / "data", env=engine_env(head, workdir / "cache"))
        # A busy machine (other benches just ended, Ray still settling) can take minutes.
        server.start(timeout=SERVER_START_S)
        log(f"Ray head {head.address}; server {server.url} (log {server.log})")
        step = "uploading the data"
        client = Client(server.url, server.token())
        client.create_dataset("ft-bench")
        client.add_small_file("ft-bench", csv_path, "train.csv")

        step = "the Ray TorchTrainer job"
        ray_side = run_ray_trainer(args, head, script, csv_path, workdir)
        log(f"ray_trainer: {ray_side.wall_s:.1f} s {ray_side.info}")
        plains: list[Side] = []
        ourses: list[Side] = []
        for i in range(1, args.repeat + 1):
            step = f"the plain Trainer script (run {i})"
            plains.append(run_plain(args, script, csv_path, workdir))
            log(f"plain {i}: {plains[-1].wall_s:.1f} s {plains[-1].info}")
            step = f"our fine-tune job (run {i})"
            # Every run tokenizes, as plain does (a re-run would reuse the node's cache).
            shutil.rmtree(workdir / "tokenized", ignore_errors=True)
            ourses.append(run_ours(args, client, "ft-bench"))
            log(f"ours {i}: {ourses[-1].wall_s:.1f} s (worker {ourses[-1].info['worker_s']})")
        samples = args.n * args.epochs
        if args.max_steps:
            samples = min(samples, args.max_steps * BATCH)
        step = "the report"
        report(plains, ray_side, ourses, samples, args.n, args.epochs)
        return 0
    except BaseException as exc:
        if server is not None and server.log.exists():
            tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-30:])
            print(f"--- server log (last lines) ---\n{tail}", file=sys.stderr)
        # Always a RESULT line, so a run among other benches says which step failed.
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 400:  # a failed subprocess's stderr: its start and its end
            reason = f"{reason[:120]} ... {reason[-270:]}"
        log(f"RESULT failed_step={step.replace(' ', '_')} error={json.dumps(reason)} "
            f"target_met=false")
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return 1
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
        if head is not None:
            head.stop()
        if args.keep:
            print(f"kept {workdir} and {ray_dir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(ray_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
