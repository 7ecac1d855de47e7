"""Operations: health, readiness, Prometheus metrics, structured logs from a real server."""

from __future__ import annotations

import json

import httpx

from tests.conftest import Api, ServerProcess


def test_health_ready_metrics(sqlite_api: Api) -> None:
    c = sqlite_api.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}
    c.get("/api/v1/datasets", headers=sqlite_api.h())
    text = c.get("/metrics").text
    assert 'clowder_ml_http_requests_total{method="GET",route="/api/v1/datasets",status="200"}' \
        in text
    assert "clowder_ml_http_request_seconds_bucket" in text


def test_readyz_fails_when_data_dir_is_not_writable(sqlite_api: Api) -> None:
    tmp = sqlite_api.settings.tmp_dir
    tmp.rename(tmp.with_name("moved"))
    tmp.write_text("now a file, not a folder")
    try:
        r = sqlite_api.client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    finally:
        tmp.unlink()
        tmp.with_name("moved").rename(tmp)


def test_real_server_logs_one_json_line_per_request(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/api/v1/datasets/x",
                  headers={"Authorization": "Bearer cml_bad_token"})
    assert r.status_code == 401
    rid = r.headers["x-request-id"]
    server.stop()
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    (entry,) = [x for x in lines if x.get("request_id") == rid]
    assert entry["status"] == 401 and entry["route"] == "/api/v1/datasets/{ref}"
    assert entry["level"] == "info" and "ms" in entry
    assert "cml_bad_token" not in server.log.read_text()
