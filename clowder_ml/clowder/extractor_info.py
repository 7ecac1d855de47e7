"""A task's ``extractor_info.json``: how it announces itself to Clowder as an extractor.

The shape is the one pyclowder extractors ship (``sample-extractors/*/extractor_info.json`` in
clowder-framework/pyclowder) and Clowder v2 reads from their heartbeats into
``ExtractorInfo`` (clowder2 ``backend/app/models/listeners.py``). Two details of Clowder v2
decide how the generated document looks:

* **parameters**: Clowder's "Submit extraction" dialog renders
  ``parameters["schema"]`` as the ``properties`` of a JSON-schema form
  (clowder2 ``frontend/src/components/listeners/SubmitExtraction.tsx``), so ``schema`` is the
  params model's *properties*, one self-contained schema per param (no ``$ref``). The
  required params are listed beside it, in ``parameters["required"]``.
* **process**: a ``dataset`` key lists the extractor on dataset pages; a ``file`` key would
  also make Clowder create a feed that runs it on every matching upload
  (``_process_incoming_v1_extractor_info`` in clowder2 ``backend/app/routers/listeners.py``).
  Training and predicting need a choice of model and columns, so every task is dataset-only
  and runs when a user submits it.
"""

from __future__ import annotations

from typing import Any

from clowder_ml.tasks.registry import TaskDef

# pyclowder's extractor_info files name this context; Clowder v1 resolves it.
EXTRACTORS_CONTEXT = "http://clowder.ncsa.illinois.edu/contexts/extractors.jsonld"
NAME_PREFIX = "clowder-ml."
AUTHOR = "clowder-ml"
# The terms of the metadata a task writes back to Clowder (JSON-LD term -> IRI).
METADATA_TERMS = ("job", "task", "params", "metrics", "model", "predictions", "lineage")


def extractor_name(task: str) -> str:
    """The extractor's (and its RabbitMQ queue's) name for ``task``."""
    return f"{NAME_PREFIX}{task}"


def metadata_context(task: str) -> dict[str, str]:
    """The JSON-LD context (term -> IRI) of the metadata ``task``'s extractor writes."""
    name = extractor_name(task)
    return {term: f"http://clowder.ncsa.illinois.edu/metadata/{name}#{term}"
            for term in METADATA_TERMS}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by (a copy of) ``defs[X]``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs[ref.removeprefix("#/$defs/")]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline_refs({**target, **rest}, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def parameters(task: TaskDef) -> dict[str, Any]:
    """``{"schema": {param: JSON schema}, "required": [param, ...]}`` of the task's params."""
    schema = task.params.model_json_schema()
    defs = schema.get("$defs", {})
    properties = {name: _inline_refs(prop, defs)
                  for name, prop in schema.get("properties", {}).items()}
    return {"schema": properties, "required": list(schema.get("required", []))}


def extractor_info(task: TaskDef, version: str, repository_url: str | None = None
                   ) -> dict[str, Any]:
    """The ``extractor_info.json`` of ``task`` at platform ``version``."""
    name = extractor_name(task.name)
    return {
        "@context": EXTRACTORS_CONTEXT,
        "name": name,
        "version": version,
        "description": task.summary,
        "author": AUTHOR,
        "contributors": [],
        "contexts": [metadata_context(task.name)],
        # Clowder v1 and pyclowder's samples spell it repType/repUrl; Clowder v2's
        # ``Repository`` model reads repository_type/repository_url (and drops the others).
        "repository": ([{"repType": "git", "repUrl": repository_url,
                         "repository_type": "git", "repository_url": repository_url}]
                       if repository_url else []),
        "process": {"dataset": ["*"]},
        "external_services": [],
        "dependencies": [],
        "bibtex": [],
        "parameters": parameters(task),
    }
