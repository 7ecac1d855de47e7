"""The endpoints the web editor and forms call as the user types: the code scan (findings
as Monaco markers, bounded body) and field-by-field checks of a task's params."""

from __future__ import annotations

from tests.conftest import Api


def test_scan_returns_findings_as_monaco_markers(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/api/v1/scan", json={"code": 'import os; os.system("x")'},
                               headers=sqlite_api.h())
    assert r.status_code == 200, r.text
    out = r.json()
    rules = {f["rule_id"]: f for f in out["findings"]}
    assert {"CML001", "CML006"} <= set(rules)
    assert out["blocked"] is True and out["block_at"] == "high"
    system = next(m for m in out["markers"] if m["code"] == "CML006")
    # os.system spans columns 11..20 (0-based) -> Monaco's 1-based 12..21, an error (8).
    assert (system["startLineNumber"], system["startColumn"], system["endColumn"]) == (1, 12, 21)
    assert system["severity"] == 8 and "process" in system["message"]


def test_clean_code_has_no_findings_and_a_syntax_error_is_one(sqlite_api: Api) -> None:
    ok = sqlite_api.client.post("/api/v1/scan", json={"code": "x = [1, 2]\nprint(sum(x))\n"},
                                headers=sqlite_api.h()).json()
    assert ok["findings"] == [] and ok["blocked"] is False
    bad = sqlite_api.client.post("/api/v1/scan", json={"code": "def f(:\n"},
                                 headers=sqlite_api.h()).json()
    assert len(bad["markers"]) == 1 and bad["markers"][0]["startLineNumber"] == 1


def test_scan_needs_a_user_and_a_bounded_strict_body(sqlite_api: Api) -> None:
    c = sqlite_api.client
    assert c.post("/api/v1/scan", json={"code": "x = 1"}).status_code == 401
    r = c.post("/api/v1/scan", json={"code": "x = 1", "run": True}, headers=sqlite_api.h())
    assert r.status_code == 422
    huge = b'{"code": "' + b"a" * (8 << 20) + b'"}'
    r = c.post("/api/v1/scan", content=huge,
               headers={**sqlite_api.h(), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> object:  # no Content-Length: the limit holds while reading
        yield b'{"code": "'
        for _ in range(64):
            yield b"a" * (128 << 10)
        yield b'"}'

    r = c.post("/api/v1/scan", content=chunks(),  # type: ignore[arg-type]
               headers={**sqlite_api.h(), "Content-Type": "application/json"})
    assert r.status_code == 413


def test_params_are_checked_field_by_field(sqlite_api: Api) -> None:
    c = sqlite_api.client
    r = c.post("/api/v1/tasks/text-classification-finetune/validate",
               json={"params": {"epochs": 0, "padding": "sideways", "bogus": 1}},
               headers=sqlite_api.h())
    assert r.status_code == 200, r.text
    out = r.json()
    fields = {e["field"]: e["message"] for e in out["errors"]}
    assert out["valid"] is False
    assert set(fields) == {"model_name", "epochs", "padding", "bogus"}
    assert "greater than or equal to 1" in fields["epochs"]
    assert "'longest' or 'max_length'" in fields["padding"]
    good = c.post("/api/v1/tasks/text-classification-finetune/validate",
                  json={"params": {"model_name": "m"}}, headers=sqlite_api.h()).json()
    assert good == {"valid": True, "errors": []}
    unknown = c.post("/api/v1/tasks/no-such-task/validate", json={"params": {}},
                     headers=sqlite_api.h())
    # An unknown task is refused with the name (404 or 422: how the path is checked).
    assert unknown.status_code in (404, 422) and "no-such-task" in unknown.text
