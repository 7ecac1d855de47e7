"""Held-out accuracy of the fine-tune defaults against our best tuned run and a plain
scikit-learn baseline, on real data sets that install offline and on generated ones.

    python bench/quality.py                       # every set
    python bench/quality.py --sets digits reviews # some of them
    python bench/quality.py --only defaults       # skip the tuned runs

Each set is split once (seeded) into a training folder (the task holds out its own
validation split from it) and a test set that no run sees until the end. Per set:

- **defaults**: the fine-tune task with only ``model_name`` (and the column names for text):
  ``epochs=auto``, the default base model, learning rate and input size.
- **tuned**: a few explicit settings (fixed epochs, other sizes, rates or bases); the best
  of them on the test set is "our best tuned run".
- **baseline**: scikit-learn on the same training rows (validation included): logistic
  regression and an RBF SVC on pixels (images) or TF-IDF word and character n-grams (text).
  ``logreg`` is the plain baseline the defaults must reach; ``svc`` is shown beside it.

The tasks run in this process (``image_finetune.run`` / ``text_finetune.run`` with a task
context, the training worker as a real child process, as tests/ml does), not through the
server and Ray: the accuracy is the same and a 2-core machine can afford it. Test accuracy
comes from the predict tasks (``image_predict.run`` / ``text_predict.run``) on the test split.

Sets:

- ``digits`` (real): scikit-learn's 1,797 handwritten digits (8x8, 10 classes), written as
  32x32 PNGs in class folders (the layout and size of the user report in issue 18), 40 % test.
- ``vader`` (real): the VADER sentiment lexicon shipped by the ``vaderSentiment`` package
  (MIT; 7,500 words, emoticons and slang rated -4..+4 by ten people each): entries rated at
  least +1 are ``pos``, at most -1 ``neg``; 1,600 to train, 800 to test.
- ``shapes`` (generated): circles, squares and triangles of random colour, size and place on
  noisy 32x32 backgrounds; 600 to train, 300 to test.
- ``reviews`` (generated): the demo's review generator (negations, contrasts, 5 % of labels
  flipped; ``clowder_ml.demo.write_sample``), 2,000 to train, 400 to test.

Needs the dev extra (scikit-learn, vaderSentiment). Ends with one ``RESULT`` line; ``met``
is true when on every set the defaults are within 0.02 of the best tuned figure and at or
above the logistic regression baseline.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clowder_ml.tasks.context import InputData, TaskContext
from clowder_ml.tasks.params import TaskParams

TOLERANCE = 0.02


# --------------------------------------------------------------------------- data sets


@dataclass
class DataSet:
    """A training folder (class folders of images, or ``train.csv``), test examples and the
    same rows as arrays/texts for the scikit-learn baseline."""

    name: str
    kind: str  # "image" | "text"
    origin: str  # "real" | "generated"
    train_dir: Path
    test_dir: Path
    train_x: Any
    train_y: list[str]
    test_x: Any
    test_y: list[str]
    tuned: list[dict[str, Any]] = field(default_factory=list)


def _write_images(folder: Path, images: list[np.ndarray[Any, Any]], labels: list[str]
                  ) -> None:
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / label / f"{i:05d}.png")


def _split(n: int, test_fraction: float, labels: list[str], seed: int) -> tuple[list[int],
                                                                               list[int]]:
    """Stratified: the same share of every label goes to the test side."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    train, test = [], []
    for idx in by_label.values():
        rng.shuffle(idx)
        k = round(len(idx) * test_fraction)
        test += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(test)


def digits(root: Path) -> DataSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = []
    for im in d.images:
        small = Image.fromarray((im / 16.0 * 255).astype(np.uint8))
        images.append(np.asarray(small.resize((32, 32), Image.Resampling.BILINEAR).convert(
            "RGB")))
    labels = [str(int(t)) for t in d.target]
    tr, te = _split(len(labels), 0.4, labels, 0)
    _write_images(root / "digits" / "train", [images[i] for i in tr], [labels[i] for i in tr])
    _write_images(root / "digits" / "test", [images[i] for i in te], [labels[i] for i in te])
    flat = np.stack(images)[:, :, :, 0].reshape(len(images), -1) / 255.0
    return DataSet("digits", "image", "real", root / "digits" / "train",
                   root / "digits" / "test", flat[tr], [labels[i] for i in tr], flat[te],
                   [labels[i] for i in te],
                   # small-cnn as epochs=auto trains it, and the issue-18 user's best
                   # setting, with and without random shifts.
                   tuned=[{"base_model": "small-cnn"},
                          {"base_model": "small-cnn", "image_size": 32, "epochs": 40},
                          {"base_model": "small-cnn", "image_size": 32, "epochs": 40,
                           "random_shift": 0.0}])


def _shape(rng: random.Random, kind: str) -> np.ndarray[Any, Any]:
    noise = np.random.default_rng(rng.randrange(2**32)).integers(0, 90, (32, 32, 3))
    base = np.full((32, 32, 3), rng.randrange(60, 200), dtype=np.int64) + noise
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = rng.randint(6, 12)
    cx, cy = rng.randint(r, 31 - r), rng.randint(r, 31 - r)
    colour = tuple(rng.randrange(256) for _ in range(3))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return np.asarray(image)


def shapes(root: Path) -> DataSet:
    rng = random.Random(7)
    kinds = ["circle", "square", "triangle"]
    labels = [kinds[i % 3] for i in range(900)]
    images = [_shape(rng, k) for k in labels]
    tr, te = _split(len(labels), 1 / 3, labels, 0)
    _write_images(root / "shapes" / "train", [images[i] for i in tr], [labels[i] for i in tr])
    _write_images(root / "shapes" / "test", [images[i] for i in te], [labels[i] for i in te])
    flat = np.stack(images).reshape(len(images), -1) / 255.0
    return DataSet("shapes", "image", "generated", root / "shapes" / "train",
                   root / "shapes" / "test", flat[tr], [labels[i] for i in tr], flat[te],
                   [labels[i] for i in te],
                   # efficientnet-lite0: ~3 s a step on 2 loaded cores at 64 px, so 5 epochs.
                   tuned=[{"base_model": "small-cnn"},
                          {"base_model": "small-cnn", "image_size": 32, "epochs": 40},
                          {"base_model": "efficientnet-lite0", "image_size": 64,
                           "epochs": 5}])


def _write_table(path: Path, texts: list[str], labels: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))


def vader(root: Path) -> DataSet:
    import vaderSentiment

    lexicon = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    rows = []
    for line in lexicon.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and abs(float(parts[1])) >= 1.0:
            rows.append((parts[0], "pos" if float(parts[1]) > 0 else "neg"))
    random.Random(3).shuffle(rows)
    rows = rows[:2400]
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    tr, te = _split(len(rows), 1 / 3, labels, 0)
    return _text_set("vader", "real", root, texts, labels, tr, te,
                     tuned=[{"epochs": 3}, {"epochs": 5, "learning_rate": 1e-4}])


def reviews(root: Path) -> DataSet:
    from clowder_ml.demo import write_sample

    folder = root / "reviews-gen"
    folder.mkdir(parents=True, exist_ok=True)
    seen = write_sample(folder / "train.csv", 2000, seed=0)
    write_sample(folder / "test.csv", 400, seed=1, avoid=frozenset(seen))
    texts, labels = [], []
    for name in ("train.csv", "test.csv"):
        with (folder / name).open() as fh:
            for row in csv.DictReader(fh):
                texts.append(row["text"])
                labels.append(row["label"])
    return _text_set("reviews", "generated", root, texts, labels, list(range(2000)),
                     list(range(2000, 2400)),
                     tuned=[{"epochs": 3}, {"epochs": 5, "learning_rate": 1e-4}])


def _text_set(name: str, origin: str, root: Path, texts: list[str], labels: list[str],
              tr: list[int], te: list[int], tuned: list[dict[str, Any]]) -> DataSet:
    _write_table(root / name / "train" / "train.csv", [texts[i] for i in tr],
                 [labels[i] for i in tr])
    _write_table(root / name / "test" / "test.csv", [texts[i] for i in te],
                 [labels[i] for i in te])
    return DataSet(name, "text", origin, root / name / "train", root / name / "test",
                   [texts[i] for i in tr], [labels[i] for i in tr], [texts[i] for i in te],
                   [labels[i] for i in te], tuned=tuned)


SETS: dict[str, Callable[[Path], DataSet]] = {"digits": digits, "vader": vader,
                                              "shapes": shapes, "reviews": reviews}


# --------------------------------------------------------------------------- our runs


class _Report:
    def __init__(self, quiet: bool) -> None:
        self.events: list[str] = []
        self.quiet = quiet

    def event(self, message: str) -> None:
        self.events.append(message)
        if not self.quiet:
            print(f"    event: {message}", flush=True)

    def metric(self, step: int, name: str, value: float) -> None:
        pass

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        pass


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ctx(work: Path, folder: Path, params: TaskParams, name: str, cpus: int,
         model: Path | None = None) -> TaskContext:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    inputs = [InputData(kind="dataset", ref="ds_1", version=1, path=folder, name=folder.name,
                        files=files, digests={f: _sha(folder / f) for f in files})]
    if model is not None:
        inputs.append(InputData(kind="model", ref="mv_1", version=1, path=model,
                                name=f"{name}@1"))
    out = work / name / "outputs"
    shutil.rmtree(work / name, ignore_errors=True)
    out.mkdir(parents=True)
    return TaskContext(job_id=name, params=params, inputs=inputs, outputs_dir=out,
                       work_dir=work / name, cpus=cpus, gpus=0, report=_Report(quiet=True))


def ours(ds: DataSet, overrides: dict[str, Any], work: Path, cpus: int, tag: str
         ) -> dict[str, Any]:
    """Fine-tune with ``overrides`` (none: the defaults), predict the test split."""
    t0 = time.perf_counter()
    if ds.kind == "image":
        from clowder_ml.tasks import image_finetune, image_predict
        from clowder_ml.tasks.image_classification import (
            ImageFinetuneParams,
            ImagePredictParams,
        )

        fp: TaskParams = ImageFinetuneParams(model_name=f"{ds.name}-{tag}", **overrides)
        trained = image_finetune.run(_ctx(work, ds.train_dir, fp, f"{ds.name}-{tag}-ft", cpus))
        model = work / f"{ds.name}-{tag}-ft" / "outputs" / "model"
        pred = image_predict.run(_ctx(work, ds.test_dir, ImagePredictParams(model="m@1"),
                                      f"{ds.name}-{tag}-pr", cpus, model))
    else:
        from clowder_ml.tasks import text_finetune, text_predict
        from clowder_ml.tasks.text_classification import FinetuneParams, PredictParams

        fp = FinetuneParams(model_name=f"{ds.name}-{tag}", **overrides)
        trained = text_finetune.run(_ctx(work, ds.train_dir, fp, f"{ds.name}-{tag}-ft", cpus))
        model = work / f"{ds.name}-{tag}-ft" / "outputs" / "model"
        pred = text_predict.run(_ctx(work, ds.test_dir, PredictParams(model="m@1",
                                                                      label_column="label"),
                                     f"{ds.name}-{tag}-pr", cpus, model))
    shutil.rmtree(work / f"{ds.name}-{tag}-ft", ignore_errors=True)
    shutil.rmtree(work / f"{ds.name}-{tag}-pr", ignore_errors=True)
    training = trained.get("training") or {}
    return {"accuracy": float(pred["accuracy"]), "seconds": time.perf_counter() - t0,
            "epochs": training.get("epochs"), "best_epoch": training.get("best_epoch"),
            "stopped": training.get("message"), "base": trained.get("base_model"),
            "size": trained.get("image_size")}


# --------------------------------------------------------------------------- baseline


def baseline(ds: DataSet) -> dict[str, float]:
    """Logistic regression and an RBF SVC (scikit-learn defaults but ``max_iter``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import SVC

    if ds.kind == "image":
        def make(clf: Any) -> Any:
            return clf
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        def make(clf: Any) -> Any:
            features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                  TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                  sublinear_tf=True))
            return make_pipeline(features, clf)

    out = {}
    for name, clf in (("logreg", LogisticRegression(max_iter=5000)), ("svc", SVC())):
        model = make(clf).fit(ds.train_x, ds.train_y)
        pred = model.predict(ds.test_x)
        out[name] = float(np.mean([p == y for p, y in zip(pred, ds.test_y, strict=True)]))
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--only", choices=("defaults", "tuned", "baseline"), default=None)
    ap.add_argument("--cpus", type=int, default=2, help="threads per training run")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quality-", dir=Path(__file__).parent / "out")
                if (Path(__file__).parent / "out").is_dir() else tempfile.mkdtemp())
    os.environ["CLOWDER_ML_CACHE_DIR"] = str(work / "cache" / "blobs")
    os.environ.pop("CLOWDER_ML_SHARED_DIR", None)
    rows = []
    try:
        for name in args.sets:
            ds = SETS[name](work / "data")
            print(f"{name} ({ds.origin} {ds.kind}s): {len(ds.train_y)} train, "
                  f"{len(ds.test_y)} test", flush=True)
            row: dict[str, Any] = {"set": name, "origin": ds.origin}
            if args.only in (None, "baseline"):
                row.update(baseline(ds))
                print(f"  baseline: logreg {row['logreg']:.4f} svc {row['svc']:.4f}",
                      flush=True)
            if args.only in (None, "defaults"):
                res = ours(ds, {}, work, args.cpus, "defaults")
                row["defaults"] = res["accuracy"]
                row["defaults_run"] = res
                print(f"  defaults: {res['accuracy']:.4f} ({res['seconds']:.0f} s; {res['base']}"
                      + (f" at {res['size']} px" if res["size"] else "")
                      + f"; {res['stopped']})", flush=True)
            if args.only in (None, "tuned"):
                best: tuple[float, dict[str, Any]] | None = None
                for i, overrides in enumerate(ds.tuned):
                    res = ours(ds, overrides, work, args.cpus, f"tuned{i}")
                    print(f"  tuned {json.dumps(overrides)}: {res['accuracy']:.4f} "
                          f"({res['seconds']:.0f} s)", flush=True)
                    if best is None or res["accuracy"] > best[0]:
                        best = (res["accuracy"], overrides)
                if best is not None:
                    row["tuned"], row["tuned_params"] = best
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| set | data | defaults | best tuned (params) | logreg | svc | defaults ok |")
    print("|---|---|---|---|---|---|---|")
    met = True
    for r in rows:
        best_known = max(r.get("tuned", -math.inf), r.get("defaults", -math.inf))
        ok = None
        if "defaults" in r and "logreg" in r:
            ok = r["defaults"] >= best_known - TOLERANCE and r["defaults"] >= r["logreg"]
            met = met and ok
        else:
            met = False
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        print(f"| {r['set']} | {r['origin']} | {fmt(r.get('defaults'))} | "
              f"{fmt(r.get('tuned'))} ({json.dumps(r.get('tuned_params'))}) | "
              f"{fmt(r.get('logreg'))} | {fmt(r.get('svc'))} | {ok} |")
    summary = " ".join(f"{r['set']}_{k}={r[k]:.4f}" for r in rows
                       for k in ("defaults", "tuned", "logreg", "svc") if k in r)
    print(f"RESULT {summary} met={str(met).lower()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
