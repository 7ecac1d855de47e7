"""``text-classification-finetune`` on the Ray node.

1. Check the base model (built-in ``minilm-l6`` or a registered version) and the data
   (columns, labels, encoding) before any training, with messages naming file, row, column.
2. Tokenize into memory-mapped Arrow files, cached on the node by the digests of everything
   that determines them (a re-run does not tokenize again).
3. Train in a worker that checkpoints to shared storage (every ``checkpoint_every_minutes``,
   and ``checkpoint_every_steps`` if set) and is restarted from its last
   checkpoint if it dies (``clowder_ml.ml.launch``), with seeds, deterministic algorithms and
   a fixed thread count, so the same inputs give bit-identical weights. With the job's
   ``resources.workers`` W > 1, W Ray Train workers train data parallel (each with the
   job's ``cpus``/``gpus``; bit-identical for the same W).
4. Write the Hugging Face folder to ``outputs/model/`` (model.safetensors, config.json with
   the label mapping, tokenizer files), with metrics.json, manifest.json and a model card;
   the server registers it as a model version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowder_ml.errors import ClowderMLError, ValidationFailed
from clowder_ml.ml import (
    json_tokenizer,
    launch,
    manifest,
    models,
    textdata,
    training_length,
    usercode,
)
from clowder_ml.runner.inputs import default_cache_dir
from clowder_ml.runner.threads import reserved_threads
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.outputs import MODEL_DIR
from clowder_ml.tasks.registry import BUILTIN_MODELS
from clowder_ml.tasks.text_classification import FinetuneParams, data_tables
from clowder_ml.tasks.training_params import card_lines, report_stop

TASK = "text-classification-finetune"
# epochs=auto: an epoch ceiling of about 2000 optimizer steps (a MiniLM fine-tune of 16-text
# batches converges well within it on the sets bench/quality.py measures), 2 to 20 epochs.
AUTO_BUDGET = training_length.AutoBudget(step_budget=2000, min_epochs=2, max_epochs=20)


def _base_model(ctx: TaskContext, p: FinetuneParams) -> tuple[Path, str]:
    if p.base_model in BUILTIN_MODELS:
        return models.builtin_dir(p.base_model), p.base_model
    base = next((i for i in ctx.inputs if i.kind == "model" and i.path.name == "base_model"),
                None)
    if base is None:
        raise ValidationFailed(f"Base model {p.base_model!r} was not provided to the job.")
    return base.path, base.name


def _examples(ctx: TaskContext, p: FinetuneParams
              ) -> tuple[textdata.TextExamples, textdata.TextExamples | None]:
    root = ctx.dataset().path
    exclude = (p.validation_file,) if p.validation_file else ()
    tables = data_tables(root, p.files, exclude)
    rel = [t.relative_to(root).as_posix() for t in tables]
    train = textdata.load_examples(root, rel, p.text_column, p.label_column, p.id_column)
    if p.validation_file:
        val = textdata.load_examples(root, [p.validation_file], p.text_column, p.label_column,
                                     p.id_column)
        return train, val
    if p.validation_split > 0:
        return textdata.split_examples(train, p.validation_split, p.seed)
    return train, None


def _batches(ex: textdata.TextExamples, size: int = 4096) -> list[textdata.TextBatch]:
    return [textdata.TextBatch(texts=ex.texts[i:i + size],
                               labels=ex.labels[i:i + size] if ex.labels else None,
                               ids=ex.ids[i:i + size], rows=ex.rows[i:i + size],
                               source=ex.sources[i] if ex.sources else "")
            for i in range(0, len(ex), size)]


def _tokenized(ex: textdata.TextExamples, tokenizer: Any, p: FinetuneParams,
               label_map: dict[str, int], key: str, cache: Path) -> Path:
    """The examples tokenized into an Arrow file, reused when ``key`` was done before."""
    out = cache / f"{key}.arrow"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)

    def tokenize(texts: list[str]) -> dict[str, list[list[int]]]:
        enc = tokenizer(texts, truncation=p.truncation, max_length=p.max_length,
                        padding="max_length" if p.padding == "max_length" else False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return textdata.encode_to_arrow(_batches(ex), tokenize, label_map, out)


def _tokenizer(base_dir: Path, builtin: bool) -> Any:
    """The base model's tokenizer. A built-in's needs only the tokenizers library (tested equal
    to ``AutoTokenizer``), so the runner does not import transformers and PyTorch while the
    training worker does (see ``json_tokenizer``)."""
    if builtin and (base_dir / json_tokenizer.TOKENIZER_FILE).is_file():
        return json_tokenizer.JsonTokenizer(base_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_dir)


def _model_card(name: str, base: str, labels: list[str], metrics: dict[str, Any],
                p: FinetuneParams, data: str, stopped: str) -> str:
    shown = "\n".join(f"| {k} | {v} |" for k, v in metrics.items()
                      if isinstance(v, int | float))
    return (f"# {name}\n\nA text classifier fine-tuned by clowder-ml from `{base}` on "
            f"`{data}`.\n\nLabels: {', '.join(labels)}\n\n| metric | value |\n|---|---|\n"
            f"{shown}\n\n{stopped}\n\nTraining: learning rate {p.learning_rate}, "
            f"batch {p.batch_size}, max length {p.max_length}, seed {p.seed}. Inputs, "
            "parameters and environment are in manifest.json; the weights are "
            "model.safetensors (no pickle).\n")


def _user_file(ctx: TaskContext, name: str, what: str) -> Path:
    path = ctx.dataset().path / name
    if name not in ctx.dataset().files or not path.is_file():
        raise ValidationFailed(f"The {what} {name!r} is not in the dataset.",
                               "Upload it to the dataset, then name its path.")
    return path


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Errors from a user's file name the file (the sandbox and scan give only lines)."""
    try:
        yield
    except ClowderMLError as exc:
        if name not in exc.message:
            exc.message = f"{name}: {exc.message}"
        raise


def _with_params_file(ctx: TaskContext, p: FinetuneParams) -> FinetuneParams:
    """The submitted params overridden by the params file (config.py runs in the sandbox)."""
    if not p.params_file:
        return p
    path = _user_file(ctx, p.params_file, "params file")
    with _naming(p.params_file):
        merged = usercode.load_params_file(path, FinetuneParams,
                                           p.model_dump(exclude={"params_file"}))
    assert isinstance(merged, FinetuneParams)
    ctx.report.event(f"params from {p.params_file}")
    return merged.model_copy(update={"params_file": p.params_file})


def _preprocessed(ctx: TaskContext, p: FinetuneParams, ex: textdata.TextExamples,
                  which: str) -> textdata.TextExamples:
    """The user's preprocess(example) applied in the sandbox (cached by code and data)."""
    if not p.preprocess_file:
        return ex
    path = _user_file(ctx, p.preprocess_file, "preprocess file")
    data_digest = textdata.cache_key(json.dumps(sorted(ctx.dataset().digests.items())),
                                     which, p.text_column, p.label_column, str(p.id_column),
                                     json.dumps(p.files), str(p.validation_file))
    with _naming(p.preprocess_file):
        out = usercode.preprocess_examples(path, ex, default_cache_dir().parent / "preprocessed",
                                           data_digest=data_digest)
    ctx.report.event(f"preprocess: {len(ex)} -> {len(out)} {which} examples")
    return out


@dataclass(frozen=True)
class _Prepared:
    """Checked, tokenized data ready for the training worker."""

    labels: list[str]
    n_train: int
    n_eval: int
    train_arrow: Path
    eval_arrow: Path | None
    code: dict[str, str]  # user file -> digest


def _prepare(ctx: TaskContext, p: FinetuneParams, base_dir: Path, base_ref: str) -> _Prepared:
    """Check everything that can be wrong with the input (the data first, it is cheap, then
    the base model), then tokenize into the node's Arrow cache."""
    train_ex, val_ex = _examples(ctx, p)
    train_ex = _preprocessed(ctx, p, train_ex, "training")
    val_ex = _preprocessed(ctx, p, val_ex, "validation") if val_ex is not None else None
    label_map = textdata.label_mapping(train_ex.labels or [])
    if val_ex is not None:
        textdata.check_validation_labels(label_map, val_ex)
    # Built-in base models are known good; checking one would import PyTorch here for nothing.
    if p.base_model not in BUILTIN_MODELS:
        models.check_text_model(base_dir, f"base model {base_ref!r}")
    labels = sorted(label_map, key=label_map.__getitem__)
    ctx.report.event(f"data: {len(train_ex)} training and "
                     f"{len(val_ex) if val_ex else 0} validation examples, "
                     f"{len(labels)} labels")

    tokenizer = _tokenizer(base_dir, p.base_model in BUILTIN_MODELS)
    digests = sorted(ctx.dataset().digests.items())
    tok_digest = "".join(manifest.sha256_file(f) for f in sorted(base_dir.glob("*token*"))
                         + sorted(base_dir.glob("vocab*")))
    code = {name: usercode.code_digest(_user_file(ctx, name, "file"))
            for name in (p.params_file, p.preprocess_file) if name}
    base_key = textdata.cache_key(json.dumps(digests), json.dumps(code), tok_digest,
                                  p.text_column,
                                  p.label_column, str(p.id_column), str(p.max_length),
                                  p.padding, str(p.truncation), str(p.validation_file),
                                  str(p.validation_split), str(p.seed), json.dumps(p.files))
    cache = default_cache_dir().parent / "tokenized"
    train_arrow = _tokenized(train_ex, tokenizer, p, label_map, base_key + "-train", cache)
    eval_arrow = (_tokenized(val_ex, tokenizer, p, label_map, base_key + "-eval", cache)
                  if val_ex is not None and len(val_ex) else None)
    return _Prepared(labels=labels, n_train=len(train_ex), n_eval=len(val_ex) if val_ex else 0,
                     train_arrow=train_arrow, eval_arrow=eval_arrow, code=code)


def run(ctx: TaskContext) -> dict[str, Any]:
    p = ctx.params
    assert isinstance(p, FinetuneParams)
    p = _with_params_file(ctx, p)
    base_dir, base_ref = _base_model(ctx, p)
    shared = Path(os.environ.get("CLOWDER_ML_SHARED_DIR") or ctx.work_dir) / "jobs" / ctx.job_id
    out_dir = shared / "model-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    # The job's resources.workers is the one source of truth (the param mirrors it since
    # submission); a params file must not change what the engine reserved.
    workers = ctx.workers
    if p.workers != workers:
        raise ValidationFailed(f"workers={p.workers} does not match the job's "
                               f"resources.workers ({workers}).",
                               "Set the number of workers when submitting (--workers), "
                               "not in a params file.")
    how = launch.choose(p.launcher, workers, p.use_gpu)
    # Per worker: with W > 1 workers each reserves the job's cpus (see Resources).
    threads = reserved_threads(ctx.cpus)
    # The local worker imports PyTorch and transformers while the data is prepared.
    early = launch.LocalWorker(shared / "worker.json", warm=str(base_dir)) \
        if how == "local" else None
    with early if early is not None else contextlib.nullcontext() as worker:
        prep = _prepare(ctx, p, base_dir, base_ref)
        if p.epochs == training_length.AUTO and prep.eval_arrow is None:
            raise ValidationFailed("The validation data is empty; "
                                   f"{training_length.AUTO} needs some.",
                                   "Raise validation_split, or set a number of epochs.")
        length = training_length.plan(p.epochs, p.early_stopping_patience, prep.n_train,
                                      p.batch_size, p.gradient_accumulation, AUTO_BUDGET)
        total = launch.total_steps(p, prep.n_train, length)
        config = {
            "base_dir": str(base_dir), "labels": prep.labels, "seed": p.seed,
            "threads": threads, "use_gpu": p.use_gpu, "train_arrow": str(prep.train_arrow),
            "eval_arrow": str(prep.eval_arrow) if prep.eval_arrow else None,
            "checkpoint_dir": str(shared / "checkpoints"), "output_dir": str(out_dir),
            "total_steps": total,
            "train_params": launch.loop_params(p, total, length),
        }
        ctx.report.event(f"training {base_ref} for "
                         + (f"{length.ceiling}, stopping when {p.metric} has not improved "
                            f"for {length.patience}" if length.auto else f"{total} steps")
                         + f" ({how} launcher, {workers} worker(s), {threads} thread(s) each)")
        if worker is not None:
            trained = worker.run(config, p.max_failures, ctx.report.event)
        else:
            trained = launch.run_ray_train(config, workers=workers, use_gpu=p.use_gpu,
                                           # One worker: the runner holds its CPUs.
                                           cpus_per_worker=ctx.cpus if workers > 1 else 0.0,
                                           gpus_per_worker=ctx.gpus or 1.0,
                                           storage=shared / "ray", name=ctx.job_id,
                                           max_failures=p.max_failures)
    labels = prep.labels
    model_out = ctx.outputs_dir / MODEL_DIR
    launch.collect_model(out_dir, model_out)
    ev = trained.get("eval") or {}
    metrics = {f"eval_{k}": v for k, v in ev.items() if k != "confusion_matrix"}
    metrics.update(train_samples_per_s=trained.get("train_samples_per_s"),
                   global_step=trained.get("global_step"),
                   epochs_completed=trained.get("epochs_completed"))
    stopped = report_stop(ctx.report, trained, p.metric, length, p.max_steps)
    digest = manifest.sha256_file(model_out / "model.safetensors")
    man = manifest.build(
        task=TASK, job_id=ctx.job_id,
        inputs=[{"kind": i.kind, "ref": i.name, "version": i.version, "files": i.digests}
                for i in ctx.inputs] + ([{"kind": "builtin", "ref": base_ref}]
                                        if p.base_model in BUILTIN_MODELS else []),
        params=p.model_dump(mode="json"), determinism=trained.get("determinism", {}),
        code=prep.code,
        extra={"weights_sha256": digest, "metrics": metrics})
    (model_out / "manifest.json").write_text(json.dumps(man, indent=2, default=str))
    (model_out / "metrics.json").write_text(json.dumps(
        {**metrics, "confusion_matrix": ev.get("confusion_matrix"), "labels": labels,
         "training": stopped, "history": trained.get("history")}, indent=2, default=str))
    (model_out / "clowder_ml.json").write_text(json.dumps(
        {"task": "text-classification", "text_column": p.text_column,
         "label_column": p.label_column, "max_length": p.max_length, "labels": labels,
         "base_model": base_ref}, indent=2))
    (model_out / "README.md").write_text(_model_card(p.model_name, base_ref, labels, metrics,
                                                     p, ctx.dataset().name,
                                                     card_lines(stopped, length)))
    shutil.rmtree(shared, ignore_errors=True)  # checkpoints are no longer needed
    return {"metrics": metrics, "digest": digest, "labels": labels,
            "train_examples": prep.n_train, "eval_examples": prep.n_eval,
            "base_model": base_ref, "launcher": how, "workers": workers,
            "training": stopped, "seconds": trained.get("seconds"),
            "resumed_from_step": trained.get("resumed_from_step"),
            "checkpoints": trained.get("checkpoints")}
