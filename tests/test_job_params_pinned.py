"""A job records its params whole, the task's defaults filled in at submission: what it ran
with stays known (and reproducible) when a later release changes a default."""

from __future__ import annotations

from tests.conftest import Api


def test_a_job_records_its_params_with_the_defaults_filled_in(api: Api) -> None:
    api.dataset("d", files={"train.csv": b"text,label\ngood,pos\nbad,neg\n"})
    c, h = api.client, api.h()
    r = c.post("/api/v1/jobs", headers=h, json={
        "task": "text-classification-finetune", "params": {"model_name": "m"},
        "inputs": [{"kind": "dataset", "ref": "d"}]})
    assert r.status_code == 201, r.text
    params = r.json()["spec"]["params"]
    assert params["model_name"] == "m"
    # Defaults the user did not send are recorded as they were at submission.
    tasks = {t["name"]: t for t in c.get("/api/v1/tasks", headers=h).json()}
    schema = tasks["text-classification-finetune"]["params_schema"]["properties"]
    defaults = {k: v["default"] for k, v in schema.items() if "default" in v}
    assert defaults and all(params[k] == v for k, v in defaults.items()), (params, defaults)
    # Submitting the recorded params again records the same params.
    again = c.post("/api/v1/jobs", headers=h, json={
        "task": "text-classification-finetune", "params": params,
        "inputs": [{"kind": "dataset", "ref": "d"}]})
    assert again.status_code == 201, again.text
    assert again.json()["spec"]["params"] == params
