"""Every task's extractor_info.json, as Clowder v2 reads it from a heartbeat and renders its
parameters in the "Submit extraction" dialog."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from clowder_ml import __version__
from clowder_ml.cli import app
from clowder_ml.clowder.extractor_info import extractor_info, extractor_name, parameters
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import TaskDef, TaskRegistry

REGISTRY = TaskRegistry()


class ClowderRepository(BaseModel):
    repository_type: str = "git"
    repository_url: str = ""


class ClowderExtractorInfo(BaseModel):
    """The fields and types of clowder2's ``ExtractorInfo`` (backend/app/models/listeners.py),
    which the heartbeat listener (backend/heartbeat_listener.py) builds from the announced
    extractor_info, plus the name/version/description its ``EventListenerDB`` takes."""

    model_config = ConfigDict(extra="allow")
    author: str | None
    process: dict[str, list[str]] | None
    maturity: str = "Development"
    name: str = Field(min_length=1)
    version: str = "1.0"
    description: str = ""
    contributors: list[str] = []
    contexts: list[dict[str, str] | str] = []
    repository: list[ClowderRepository] = []
    external_services: list[str] = []
    libraries: list[str] = []
    bibtex: list[str] = []
    default_labels: list[str] = []
    categories: list[str] = []
    parameters: dict[str, Any] | None = None
    unique_key: str | None = None


def _form_schema(info: dict[str, Any]) -> dict[str, Any]:
    """The schema Clowder's dialog validates with (``{properties: parameters.schema}``)."""
    params = info["parameters"]
    return {"type": "object", "properties": params["schema"], "required": params["required"]}


@pytest.mark.parametrize("task", REGISTRY.names())
def test_every_task_announces_a_valid_extractor(task: str) -> None:
    definition = REGISTRY.get(task)
    info = extractor_info(definition, __version__)
    parsed = ClowderExtractorInfo.model_validate(json.loads(json.dumps(info)))
    assert parsed.name == extractor_name(task) == f"clowder-ml.{task}"
    assert parsed.version == __version__ and parsed.description == definition.summary
    # Listed on dataset pages; no "file" key, which would make Clowder run it on uploads.
    assert parsed.process == {"dataset": ["*"]}
    model_schema = definition.params.model_json_schema()
    assert list(info["parameters"]["schema"]) == list(model_schema["properties"])
    assert info["parameters"]["required"] == model_schema.get("required", [])
    assert "$ref" not in json.dumps(info["parameters"])
    jsonschema.Draft202012Validator.check_schema(_form_schema(info))


def test_the_parameters_accept_what_the_task_accepts() -> None:
    info = extractor_info(REGISTRY.get("text-classification-predict"), __version__)
    schema = _form_schema(info)
    jsonschema.validate({"model": "sentiment@latest", "batch_size": 32}, schema)
    for bad in ({"batch_size": 32}, {"model": "m", "batch_size": 0},
                {"model": "m", "workers": "two"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    size: int = Field(ge=1)


class NestedParams(TaskParams):
    colour: Colour = Colour.RED
    inner: Inner
    inners: list[Inner] = []


def test_refs_are_inlined_so_each_param_schema_stands_alone() -> None:
    """Clowder renders each param's schema without the model's $defs: nested models and
    enums must be written out in place."""
    task = TaskDef(name="nested", summary="s", params=NestedParams, entry="x:y")
    assert "$defs" in NestedParams.model_json_schema()  # the case being tested
    params = parameters(task)
    assert "$ref" not in json.dumps(params)
    assert params["schema"]["colour"]["enum"] == ["red", "blue"]
    assert params["schema"]["inner"]["properties"]["size"]["minimum"] == 1
    assert params["schema"]["inners"]["items"]["properties"]["size"]["type"] == "integer"
    assert params["required"] == ["inner"]
    schema = {"type": "object", **{"properties": params["schema"],
                                   "required": params["required"]}}
    jsonschema.validate({"colour": "blue", "inner": {"size": 2}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"inner": {"size": 0}}, schema)


def test_the_cli_prints_the_extractor_info() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["clowder", "extractor-info", "text-classification-predict",
                              "--repository-url", "https://example.org/clowder-ml.git"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info == extractor_info(REGISTRY.get("text-classification-predict"), __version__,
                                  "https://example.org/clowder-ml.git")
    url = "https://example.org/clowder-ml.git"
    assert info["repository"] == [{"repType": "git", "repUrl": url,
                                   "repository_type": "git", "repository_url": url}]
    assert ClowderExtractorInfo.model_validate(info).repository[0].repository_url == url
    assert info["parameters"]["schema"]["model"]["type"] == "string"
    bad = runner.invoke(app, ["clowder", "extractor-info", "no-such-task"])
    assert bad.exit_code == 1
    assert "Unknown task 'no-such-task'" in bad.output and "text-classification" in bad.output
