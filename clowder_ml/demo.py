"""``clowder-ml demo``: start the server on embedded defaults (SQLite, a local data folder, an
embedded Ray head) and walk through the main flow on a generated sample: create a dataset,
resumable upload, preview, verified download, a ``dataset-profile`` job on Ray, then the main
job: fine-tune the built-in minilm-l6 on the sample (a short run), and predict with the new
model version, which adds the predictions to the dataset.
"""

from __future__ import annotations

import csv
import random
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console

from clowder_ml.api.app import create_app
from clowder_ml.client import Client
from clowder_ml.db.models import User
from clowder_ml.services import users
from clowder_ml.settings import Settings

SUBJECTS = ["film", "movie", "plot", "acting", "soundtrack", "script", "ending", "cast",
            "pacing", "dialogue", "camera work", "story", "lead actor", "humour", "finale"]
POSITIVE = ["great", "lovely", "excellent", "superb", "enjoyable", "delightful", "moving",
            "clever", "gripping", "charming", "beautiful", "fun", "touching", "sharp"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "painful", "disappointing", "clumsy",
            "tedious", "forgettable", "messy", "weak", "predictable", "flat", "silly"]
INTENSITY = ["", "", "really ", "truly ", "rather ", "quite ", "absolutely ", "a bit "]
ASIDES = ["", "", "", "I saw it on a rainy Sunday.", "My sister picked it.",
          "It runs a little over two hours.", "The cinema was half empty.",
          "We had popcorn.", "I went in knowing nothing about it."]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Greg", "Hana", "Ivan", "Jo"]


def review(rng: random.Random, positive: bool) -> str:
    """One made-up review whose sentiment is ``positive``: a plain verdict, a negated one
    ("not dull"), a contrast whose second half decides ("X was dull, but Y was superb"), or
    someone else's verdict agreed with; plus an unrelated aside now and then."""
    good, bad = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
    subject, other = rng.sample(SUBJECTS, 2)
    shape = rng.randrange(4)
    if shape == 0:
        text = f"The {subject} was {rng.choice(INTENSITY)}{rng.choice(good)}."
    elif shape == 1:
        text = f"The {subject} was not {rng.choice(bad)} at all."
    elif shape == 2:
        text = (f"The {other} was {rng.choice(bad)}, but the {subject} was "
                f"{rng.choice(INTENSITY)}{rng.choice(good)}.")
    else:
        text = f"{rng.choice(NAMES)} found the {subject} {rng.choice(good)}, and I agree."
    return " ".join(x for x in (rng.choice(ASIDES), text) if x)


def write_sample(path: Path, rows: int = 2000, seed: int = 0, noise: float = 0.05,
                 avoid: frozenset[str] = frozenset()) -> set[str]:
    """Write a sentiment CSV (text,label) generated deterministically from ``seed``: varied
    reviews (negations and contrasts, not only keywords) with a share ``noise`` of labels
    flipped, as real annotations have, so a model's accuracy tells something. Texts in
    ``avoid`` are left out (a held-out file shares no text with the training file). Returns
    the texts written."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security
    written: set[str] = set()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        while rows > 0:
            positive = rng.random() < 0.5
            text = review(rng, positive)
            if text in avoid:
                continue
            label = positive if rng.random() >= noise else not positive
            w.writerow([text, "pos" if label else "neg"])
            written.add(text)
            rows -= 1
    return written


def write_samples(folder: Path) -> tuple[Path, Path]:
    """``train.csv`` (2,000 reviews) and a held-out ``test.csv`` (400 other reviews)."""
    train, test = folder / "train.csv", folder / "test.csv"
    seen = write_sample(train, 2000, seed=0)
    write_sample(test, 400, seed=1, avoid=frozenset(seen))
    return train, test


def run(host: str, port: int, data_dir: Path, keep_serving: bool) -> None:
    console = Console(stderr=True)
    settings = Settings(data_dir=data_dir)
    url = f"http://{host}:{port}"
    if settings.job_api_url is None:
        settings.job_api_url = url  # runners on the embedded head call this server back
    app = create_app(settings)
    # proxy_headers off: the app believes X-Forwarded-* only from CLOWDER_ML_TRUSTED_PROXIES.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           log_config=None, proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit(f"The server did not start on {url} (is the port free?).")
        time.sleep(0.05)

    # The demo is the operator's own process: it mints a short-lived admin token directly.
    platform = app.state.platform
    with platform.db.session() as s:
        admin = s.query(User).filter_by(username="admin").one()
        _, token = users.issue_token(s, admin, "demo", expires_in=timedelta(hours=1))

    with Client(url, token) as client, tempfile.TemporaryDirectory() as tmp:
        sample, held_out = write_samples(Path(tmp))
        console.print(f"[bold]1.[/] Uploading generated reviews ({sample.stat().st_size} + "
                      f"{held_out.stat().st_size} bytes, training and held-out) by tus into "
                      "dataset 'demo-reviews'...")
        client.upload(sample, "demo-reviews", "train/reviews.csv")
        st = client.upload(held_out, "demo-reviews", "test/reviews.csv")
        console.print(f"   -> version {st['version']} of demo-reviews")
        p = client.preview("demo-reviews", "train/reviews.csv", rows=3)
        cols = ", ".join(f"{c['name']}:{c['type']}" for c in p["columns"])
        console.print(f"[bold]2.[/] Preview: {p['row_count']} rows; columns {cols}")
        out = client.download("demo-reviews", "train/reviews.csv", Path(tmp) / "copy.csv")
        same = out.read_bytes() == sample.read_bytes()
        console.print(f"[bold]3.[/] Downloaded and verified by sha256: {same}")
        if not same:
            raise SystemExit("Downloaded bytes differ from the upload.")
        profile_job(client, console)
        finetune_and_predict(client, console)

    generated = getattr(app.state, "generated_admin_password", None)
    console.print(f"\n[bold green]clowder-ml is running at {url}[/]  (web UI: {url}/, "
                  f"API docs: {url}/docs)")
    if generated:
        console.print(f"Log in as [bold]admin[/] with password [bold]{generated}[/] "
                      "(shown once).")
    else:
        console.print("Log in as [bold]admin[/] with the password shown at the first start "
                      "(or CLOWDER_ML_ADMIN_PASSWORD).")
    console.print(f"CLI: clowder-ml login --url {url}")
    try:
        if keep_serving:
            console.print("Press Ctrl-C to stop.")
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(60)  # shutdown stops the embedded Ray head too


def profile_job(client: Client, console: Console) -> None:
    """Step 4: a ``dataset-profile`` job on the embedded Ray head, with its live log."""
    console.print("[bold]4.[/] Profiling the dataset as a job on Ray (the first job waits "
                  "for the embedded Ray head to start)...")
    job = client.submit_job("dataset-profile", datasets=["demo-reviews"])
    for chunk in client.follow_job_logs(job["id"]):
        for line in chunk.splitlines():
            console.print(f"   [dim]| {line}[/]")
    job = client.wait_job(job["id"], timeout_s=300)
    if job["state"] != "succeeded":
        raise SystemExit(f"The profile job {job['state']}: {job['reason']}")
    console.print(f"   -> job {job['id']} {job['state']}:")
    for table in job["result"]["tables"]:
        label = table["label"] or {}
        console.print(f"      {table['path']}: {table['rows']} rows, "
                      f"{table['duplicate_rows']} duplicate rows, labels "
                      f"{label.get('distribution')}")
    console.print(f"   (see it again: clowder-ml jobs show {job['id']})")


def _run_job(client: Client, console: Console, task: str, params: dict[str, Any]
             ) -> dict[str, Any]:
    job = client.submit_job(task, datasets=["demo-reviews"], params=params)
    last = ""

    def show(j: dict[str, Any]) -> None:
        nonlocal last
        p = j.get("progress") or {}
        line = f"{j['state']}" + (f", {p.get('message')}" if p.get("message") else "")
        if line != last:
            console.print(f"   [dim]| {line}[/]")
            last = line

    job = client.wait_job(job["id"], timeout_s=1800, on_update=show)
    if job["state"] != "succeeded":
        raise SystemExit(f"The {task} job {job['state']}: {job['reason']}\n"
                         f"{job.get('log_tail') or ''}")
    return job


def finetune_and_predict(client: Client, console: Console) -> None:
    """Steps 5 and 6: the main job, fine-tune then predict (short, to keep the demo quick)."""
    console.print("[bold]5.[/] Fine-tuning minilm-l6 on train/reviews.csv (a short run: 60 "
                  "steps)...")
    job = _run_job(client, console, "text-classification-finetune", {
        "model_name": "demo-sentiment", "base_model": "minilm-l6", "text_column": "text",
        "label_column": "label", "files": ["train/reviews.csv"], "epochs": 1,
        "max_steps": 60, "max_length": 48, "batch_size": 16, "learning_rate": 2e-4,
        "validation_split": 0.1})
    result = job["result"]
    metrics = result["metrics"]
    console.print(f"   -> model {result['model']['ref']} (sha256 {result['digest'][:12]}...), "
                  f"eval accuracy {metrics.get('eval_accuracy', 0):.3f}, "
                  f"macro F1 {metrics.get('eval_macro_f1', 0):.3f}")
    console.print(f"      files: GET /api/v1/jobs/{job['id']}/outputs  "
                  f"(model/model.safetensors, config.json, manifest.json, README.md)")
    console.print("[bold]6.[/] Predicting the held-out reviews with demo-sentiment@latest...")
    job = _run_job(client, console, "text-classification-predict", {
        "model": "demo-sentiment@latest", "label_column": "label",
        "files": ["test/reviews.csv"]})
    result = job["result"]
    where = result["predictions"]
    console.print(f"   -> {result['rows']} held-out rows labelled {result['label_counts']}, "
                  f"accuracy {result['accuracy']:.3f} (5% of the labels are flipped on "
                  f"purpose); predictions in demo-reviews version {where['version']} at "
                  f"{where['path']}")

