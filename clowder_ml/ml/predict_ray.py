"""Batched inference cores, and prediction across workers with Ray Data ``map_batches``.

The cores (:func:`text_probs`, :func:`image_probs`) are what both predict paths run: the
in-process streaming loop of a one-worker job and the actors of a multi-worker one, so the
two give the same predictions.

Across workers (:func:`predict_across_workers`)
-----------------------------------------------
* The runner (a Ray job entrypoint) reads and checks the whole input with the same readers
  as the one-worker path (bad data fails with the same message naming file, row and column,
  before any prediction) into Arrow blocks, each row carrying its input position in an
  ``index`` column, and hands them to Ray's object store (which spills to disk). Unlike the
  one-worker path, the input's columns are briefly held in the runner's memory at once
  (compact Arrow columns, not Python objects).
* ``ray.data.from_blocks(blocks).map_batches(Predictor, compute=ActorPoolStrategy(
  size=workers), num_cpus=..., batch_size=...)``: each actor loads the model once (its files
  travel through the object store, so an actor on another node needs no shared disk) and
  predicts its batches under ``torch.inference_mode`` (text: sorted by length inside the
  batch, so little padding is computed). Nothing else in the pipeline needs a CPU task.
* The runner iterates the results, puts them back in input order by ``index`` (a small
  reorder buffer; Ray Data is also asked to preserve order, so it stays small), and hands
  each row to the caller, which writes it with the shared
  :class:`~clowder_ml.ml.predict_output.PredictionWriter`.

CPU rule (:func:`actor_cpus`), the engine's rule for jobs with workers: a predict job's
``workers`` param mirrors its ``resources.workers`` (``engine.spec.Resources``), so with
``workers`` = W > 1 the runner reserves no CPUs (it only reads, orchestrates and writes)
and each of the W actors reserves the job's ``cpus`` (fractions allowed) and runs
``max(1, floor(cpus))`` PyTorch threads: W x ``cpus`` in all, checked against the cluster
at submission, so a 2-CPU head runs ``workers=2, cpus=1`` exactly, with no deadlock. A
context where the runner does hold ``cpus`` (the job's ``resources.workers`` is 1, e.g. a
task run outside the engine) shares them instead: per actor ``min(cpus, cluster_cpus -
cpus) / workers`` booked (possibly 0: never more than the cluster has beside the runner),
``max(1, floor(cpus / workers))`` threads.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "index"  # the input position each row carries through Ray Data
PROBS = "probs"  # the (rows, labels) float32 probabilities an actor adds


def text_probs(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int,
               max_length: int, torch: Any) -> list[list[float]]:
    """Class probabilities per text, in the given order (computed in length order, so each
    batch of ``batch_size`` pads to similar lengths), under ``torch.inference_mode``."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs: list[list[float]] = [[] for _ in texts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            logits = model(**enc).logits.float()
            for i, row in zip(idx, torch.softmax(logits, dim=-1).tolist(), strict=True):
                probs[i] = row
    return probs


def image_probs(model: Any, pixels: Sequence[np.ndarray[Any, np.dtype[np.uint8]]],
                mean: Sequence[float], std: Sequence[float], batch_size: int,
                torch: Any) -> list[list[float]]:
    """Class probabilities per decoded image (uint8 HWC), in order, on the CPU, under
    ``torch.inference_mode`` (the caller may already be inside it)."""
    from clowder_ml.ml.imagedata import to_tensor

    out: list[list[float]] = []
    device = torch.device("cpu")
    with torch.inference_mode():
        for b in range(0, len(pixels), batch_size):
            x = to_tensor(list(pixels[b:b + batch_size]), mean, std, device)
            out.extend(torch.softmax(model(pixel_values=x).logits.float(), dim=-1).tolist())
    return out


# ----------------------------------------------------------------------------- actors


def model_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder by relative path (what an actor rebuilds it from)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _materialize(model: list[Any]) -> Path:
    """The model folder an actor loads: rebuilt from the files in ``model[0]`` (an object
    ref, wrapped in a list so Ray hands the actor the ref, not a 90 MB copy per call)."""
    import ray

    files: dict[str, bytes] = ray.get(model[0])
    folder = Path(tempfile.mkdtemp(prefix="cml-predict-model-"))
    for rel, data in files.items():
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return folder


@contextmanager
def _model_folder(model: list[Any]) -> Iterator[Path]:
    """:func:`_materialize`, removed once loaded: actors are killed at the job's end, so
    nothing later would clean it, and each copy is a whole model. (Weights a loader keeps
    memory-mapped stay readable after the unlink.)"""
    folder = _materialize(model)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class TextPredictor:
    """A Ray Data actor: loads a text classifier once, then maps batches of
    ``{index, text, id, input[, label]}`` to ``{index, id, input[, label], probs}``."""

    def __init__(self, model: list[Any], batch_size: int, max_length: int,
                 threads: int) -> None:
        import torch

        from clowder_ml.ml.models import load_classifier

        torch.set_num_threads(threads)
        self.torch = torch
        with _model_folder(model) as folder:
            self.model, self.tokenizer, _ = load_classifier(folder)
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        texts = [str(t) for t in batch["text"]]
        probs = text_probs(self.model, self.tokenizer, texts, self.batch_size,
                           self.max_length, self.torch)
        out = {k: v for k, v in batch.items() if k != "text"}
        out[PROBS] = np.asarray(probs, dtype=np.float64)
        return out


class ImagePredictor:
    """A Ray Data actor: loads an image classifier once, then maps batches of
    ``{index, data (the file's bytes), id, input[, label]}`` to ``{index, id, input[,
    label], probs, error, hint}``. An image that does not decode gets NaN probabilities and
    its message (naming the file) in ``error``: the runner raises it, in input order."""

    def __init__(self, model: list[Any], size: int, mean: Sequence[float],
                 std: Sequence[float], batch_size: int, threads: int) -> None:
        import torch

        from clowder_ml.ml.image_models import load_classifier

        torch.set_num_threads(threads)
        self.torch = torch
        with _model_folder(model) as folder:
            self.model, id2label = load_classifier(folder)
        self.n_labels = len(id2label)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.scratch = Path(tempfile.mkdtemp(prefix="cml-predict-img-"))

    def __del__(self) -> None:
        scratch = getattr(self, "scratch", None)  # None when __init__ failed early
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)  # best effort: one small image

    def __call__(self, batch: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        from clowder_ml.errors import ValidationFailed
        from clowder_ml.ml.imagedata import decode_image

        n = len(batch[INDEX])
        errors, hints = [""] * n, [""] * n
        pixels: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
        decoded: list[int] = []
        # decode_image reads a path: the bytes are written to one scratch file, so the
        # decoding (and its messages) are exactly the one-worker path's.
        scratch = self.scratch / "image"
        for i in range(n):
            scratch.write_bytes(bytes(batch["data"][i]))
            try:
                pixels.append(decode_image(scratch, self.size, str(batch["id"][i])))
                decoded.append(i)
            except ValidationFailed as exc:
                errors[i], hints[i] = exc.message, exc.hint or ""
        probs = np.full((n, self.n_labels), np.nan, dtype=np.float64)
        got = image_probs(self.model, pixels, self.mean, self.std, self.batch_size,
                          self.torch)
        for i, row in zip(decoded, got, strict=True):
            probs[i] = row
        out = {k: v for k, v in batch.items() if k != "data"}
        out[PROBS] = probs
        out["error"] = np.asarray(errors, dtype=object)
        out["hint"] = np.asarray(hints, dtype=object)
        return out


# ------------------------------------------------------------------------------ driver


def actor_cpus(cpus: float, workers: int, cluster_cpus: float, runner_holds: bool) -> float:
    """CPUs Ray books per actor (see the module's CPU rule); ``runner_holds``: the runner's
    own reservation is ``cpus`` (else it holds none and ``cpus`` is per worker)."""
    if not runner_holds:
        return cpus
    return max(0.0, min(cpus, cluster_cpus - cpus)) / workers


def actor_threads(cpus: float, workers: int, runner_holds: bool) -> int:
    """PyTorch threads per actor: its CPUs, at least one."""
    return max(1, math.floor(cpus / workers if runner_holds else cpus))


def predict_across_workers(
    blocks: Iterable[dict[str, list[Any]]],
    predictor: type[Any],
    constructor_kwargs: dict[str, Any],
    model_dir: Path,
    *,
    workers: int,
    cpus: float,
    runner_holds: bool,
    batch_rows: int,
    on_start: Callable[[float, int], None],
) -> Iterator[dict[str, Any]]:
    """Rows predicted by ``workers`` ``predictor`` actors, yielded in input order.

    ``blocks`` are column dicts (each with an ``index`` column numbering rows from 0 in
    input order, consecutive across blocks); they are read (and checked) before any
    prediction. ``constructor_kwargs`` go to the predictor with ``model`` (the files of
    ``model_dir``) and ``threads`` added; ``cpus`` and ``runner_holds`` place them (see
    :func:`actor_cpus`). ``on_start(cpus_per_actor, threads)`` is called
    once the placement is known. Each yielded row is a dict of the predictor's output
    columns (``probs`` as a list of floats). The process joins the job's Ray cluster
    (``ray.init()`` with no address: the entrypoint's cluster) and leaves it on return.
    """
    import pyarrow as pa
    import ray
    from ray.data import DataContext

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(log_to_driver=True)
    try:
        tables = [pa.table(block) for block in blocks if block[INDEX]]
        if not tables:
            return
        cluster: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        per_actor = actor_cpus(cpus, workers, float(cluster.get("CPU", 0.0)), runner_holds)
        threads = actor_threads(cpus, workers, runner_holds)
        on_start(per_actor, threads)
        DataContext.get_current().execution_options.preserve_order = True
        model_ref = ray.put(model_files(model_dir))
        # from_blocks, not from_arrow(_refs): those run a 1-CPU metadata task per block,
        # which never starts when the runner holds every CPU of the cluster; from_blocks
        # computes the metadata here and keeps our blocks as they are.
        source = ray.data.from_blocks(tables)
        del tables  # the object store holds them now (and spills them to disk if need be)
        ds = source.map_batches(
            predictor,
            fn_constructor_kwargs={**constructor_kwargs, "model": [model_ref],
                                   "threads": threads},
            # A fixed pool of ``workers`` actors (``concurrency=`` is deprecated since 2.51).
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=per_actor,
            batch_size=batch_rows,
            batch_format="numpy")
        yield from _in_order(ds.iter_batches(batch_size=None, batch_format="numpy"))
    finally:
        if started_ray:
            ray.shutdown()


def _in_order(batches: Iterable[dict[str, np.ndarray[Any, Any]]]) -> Iterator[dict[str, Any]]:
    """Rows of ``batches`` by ascending ``index`` (0, 1, 2, ...), whatever order they come
    in; ``numpy`` values become Python ones."""
    pending: dict[int, dict[str, Any]] = {}
    want = 0
    for batch in batches:
        columns = {k: v.tolist() for k, v in batch.items()}
        for j, index in enumerate(columns[INDEX]):
            pending[int(index)] = {k: v[j] for k, v in columns.items()}
        while want in pending:
            yield pending.pop(want)
            want += 1
    if pending:  # a gap: some rows never came back
        raise RuntimeError(f"Ray Data returned rows out of sequence (missing row {want})")


def block_rows(batch_size: int, cap: int) -> int:
    """Rows per Ray Data block: eight model batches (enough to length-sort usefully, small
    enough that a table of a few thousand rows still spreads over the actors)."""
    return max(1, min(cap, batch_size * 8))

