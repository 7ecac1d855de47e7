"""OpenAPI links: how the answer of one operation names what the next one takes.

A client (or a fuzzer's stateful phase) follows them to chain real work: create a dataset,
upload files to it (a version), read that version's files, run a job on the dataset, and
reach the model version the job made. Each link says where the next operation's parameters
come from (``$response.body#/...``, ``$request.path...``), as OpenAPI 3 defines.

The table is the one place links are declared; :func:`add_links` writes them into the
document FastAPI builds (operation ids are looked up there, so they never go stale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API = "/api/v1"


@dataclass(frozen=True)
class Link:
    """From the ``status`` answer of ``source`` (``"METHOD /path"``) to ``target``."""

    name: str
    source: str
    status: int
    target: str
    parameters: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    description: str = ""


def _ds(path: str = "") -> str:
    return f"{API}/datasets/{{ref}}{path}"


_NEW_DATASET = {"ref": "$response.body#/id"}
_NEW_VERSION = {"ref": "$request.path.ref", "number": "$response.body#/number"}
_FIRST_FILE = {"ref": "$request.path.ref", "path": "$response.body#/files/0/path"}
_JOB = {"job_id": "$response.body#/id"}
_MODEL_OF_JOB = {"ref": "$response.body#/result/model/ref"}
_IMPORTED = {"name": "$response.body#/version/model", "number": "$response.body#/version/version"}

LINKS: tuple[Link, ...] = (
    # A new dataset: read it, change it, fill it, share it, run a job on it.
    *(Link(f"{verb}Dataset", f"POST {API}/datasets", 201, f"{method} {_ds(tail)}", _NEW_DATASET)
      for verb, method, tail in (
          ("Get", "GET", ""), ("Update", "PATCH", ""), ("ListVersions", "GET", "/versions"),
          ("ListFiles", "GET", "/files"), ("Tree", "GET", "/tree"),
          ("ListShares", "GET", "/shares"), ("UploadFiles", "POST", "/files"),
          ("UploadArchive", "POST", "/archive"), ("Delete", "DELETE", ""))),
    Link("SubmitJobOnDataset", f"POST {API}/datasets", 201, f"POST {API}/jobs",
         body={"task": "dataset-profile", "params": {},
               "inputs": [{"kind": "dataset", "ref": "$response.body#/id"}]},
         description="A job that reads the new dataset (dataset-profile here; every task "
                     "takes its inputs the same way)"),
    # A new version (files uploaded or removed): its manifest, zip and lineage.
    *(Link(f"{verb}NewVersion", source, 201 if method == "POST" else 200,
           f"GET {_ds(tail)}", _NEW_VERSION)
      for source, method in ((f"POST {_ds('/files')}", "POST"),
                             (f"POST {_ds('/archive')}", "POST"),
                             (f"DELETE {_ds('/files/{path}')}", "DELETE"))
      for verb, tail in (("Get", "/versions/{number}"), ("Download", "/versions/{number}/archive"),
                         ("Lineage", "/versions/{number}/lineage"))),
    # A version's manifest names its files: read, preview, describe, remove one.
    *(Link(f"{verb}File", f"GET {_ds('/versions/{number}')}", 200, f"{method} {_ds(tail)}",
           _FIRST_FILE)
      for verb, method, tail in (
          ("Download", "GET", "/files/{path}"), ("Preview", "GET", "/preview/{path}"),
          ("GetMetadata", "GET", "/file-metadata/{path}"),
          ("SetMetadata", "PUT", "/file-metadata/{path}"),
          ("Remove", "DELETE", "/files/{path}"))),
    Link("SubmitJobOnVersion", f"GET {_ds('/versions/{number}')}", 200, f"POST {API}/jobs",
         body={"task": "dataset-profile", "params": {},
               "inputs": [{"kind": "dataset", "ref": "$request.path.ref",
                           "version": "$response.body#/number"}]},
         description="A job that reads exactly this version (dataset-profile here; every "
                     "task takes its inputs the same way)"),
    # A job: watch it, stop it; once it succeeded, the model version it made.
    *(Link(f"{verb}Job", f"POST {API}/jobs", 201, f"{method} {API}/jobs/{{job_id}}{tail}",
           _JOB)
      for verb, method, tail in (
          ("Get", "GET", ""), ("Events", "GET", "/events"), ("Logs", "GET", "/logs"),
          ("Metrics", "GET", "/metrics"), ("Outputs", "GET", "/outputs"),
          ("Cancel", "POST", "/cancel"))),
    Link("ModelOfJob", f"GET {API}/jobs/{{job_id}}", 200, f"GET {API}/model-refs/{{ref}}",
         _MODEL_OF_JOB, description="The model version a fine-tune job made (when it has)"),
    # An imported model version: the model, the version, its files.
    *(Link(f"{verb}Imported", f"POST {API}/models/import", 201, f"GET {API}/models/{target}",
           params)
      for verb, target, params in (
          ("Model", "{name}", {"name": "$response.body#/version/model"}),
          ("Version", "{name}/versions/{number}", _IMPORTED),
          ("Files", "{name}/versions/{number}/files", _IMPORTED),
          ("Lineage", "{name}/versions/{number}/lineage", _IMPORTED))),
    # Reproductions, users, tokens, tasks.
    Link("GetReproduction", f"POST {API}/models/{{name}}/versions/{{number}}/reproduce", 202,
         f"GET {API}/models/{{name}}/versions/{{number}}/reproductions/{{rid}}",
         {"name": "$request.path.name", "number": "$request.path.number",
          "rid": "$response.body#/id"}),
    Link("UnlockUser", f"POST {API}/users", 201, f"POST {API}/users/{{username}}/unlock",
         {"username": "$response.body#/username"}),
    Link("RevokeToken", f"POST {API}/tokens", 201, f"DELETE {API}/tokens/{{token_id}}",
         {"token_id": "$response.body#/id"}),
    Link("ValidateTaskParams", f"GET {API}/tasks", 200, f"POST {API}/tasks/{{task}}/validate",
         {"task": "$response.body#/0/name"}),
)


def _operation(document: dict[str, Any], spec: str) -> dict[str, Any]:
    method, path = spec.split(" ", 1)
    try:
        op: dict[str, Any] = document["paths"][path][method.lower()]
    except KeyError:
        raise KeyError(f"link names {spec!r}, which the API does not have") from None
    return op


def add_links(document: dict[str, Any], links: tuple[Link, ...] = LINKS) -> dict[str, Any]:
    """Write ``links`` into ``document`` (in place) and return it."""
    for link in links:
        source = _operation(document, link.source)
        target = _operation(document, link.target)
        entry: dict[str, Any] = {"operationId": target["operationId"]}
        if link.parameters:
            entry["parameters"] = dict(link.parameters)
        if link.body is not None:
            entry["requestBody"] = link.body
        if link.description:
            entry["description"] = link.description
        response = source["responses"][str(link.status)]
        response.setdefault("links", {})[link.name] = entry
    return document
