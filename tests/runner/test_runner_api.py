"""RunnerApi's retries and error mapping, against httpx.MockTransport and a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from clowder_ml.runner import api as api_mod
from clowder_ml.runner.api import ApiFailed, RunnerApi, TokenRefused

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Replaces the ``time`` module inside clowder_ml.runner.api: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(api_mod, "time", c)
    return c


@pytest.fixture
def make_api() -> Iterator[Callable[..., RunnerApi]]:
    made: list[RunnerApi] = []

    def make(handler: Handler, *, retry_s: float = 30.0) -> RunnerApi:
        api = RunnerApi("http://server.test/", "job-token", retry_s=retry_s)
        base_url, headers = api._http.base_url, api._http.headers
        api._http.close()
        api._http = httpx.Client(transport=httpx.MockTransport(handler), base_url=base_url,
                                 headers=headers)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def test_transient_503_is_retried_until_it_succeeds(clock: FakeClock,
                                                    make_api: Callable[..., RunnerApi]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= 2:
            return httpx.Response(503, text="restarting")
        return httpx.Response(200, json={"cancel_requested": True, "log_offset": 5})

    api = make_api(handler)
    ack = api.report({"events": [{"message": "hi"}]})
    assert ack == {"cancel_requested": True, "log_offset": 5}
    assert len(seen) == 3 and len(clock.sleeps) == 2
    for r in seen:
        assert r.method == "POST"
        assert r.url == "http://server.test/api/v1/runner/report"
        assert r.headers["authorization"] == "Bearer job-token"
        assert json.loads(r.content) == {"events": [{"message": "hi"}]}


def test_connection_error_until_the_deadline_raises_api_failed(
        clock: FakeClock, make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    api = make_api(handler, retry_s=20.0)
    with pytest.raises(ApiFailed, match=r"GET /job: server unreachable \(ConnectError"):
        api.job()
    assert calls > 3  # it did retry, with backoff ...
    assert 0.1 <= clock.sleeps[0] <= 0.3 and max(clock.sleeps) <= 7.5  # capped, jittered
    # ... and gave up at the deadline (the jitter may overshoot it by half a 5 s delay)
    assert 20.0 - 5.0 <= clock.now - 1000.0 <= 20.0 + 2.5


def test_retry_s_zero_tries_once(clock: FakeClock, make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(502)

    api = make_api(handler)
    with pytest.raises(ApiFailed, match="HTTP 502"):
        api.report({}, retry_s=0)
    assert calls == 1 and clock.sleeps == []


def test_401_is_token_refused_at_once(clock: FakeClock,
                                      make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, json={"error": {"code": "authentication_required",
                                                   "message": "no"}})

    api = make_api(handler)
    with pytest.raises(TokenRefused):
        api.report({"events": []})
    assert calls == 1 and clock.sleeps == []


@pytest.mark.parametrize("status", [400, 404, 409, 422, 500])
def test_client_errors_name_the_code_without_retry(
        status: int, clock: FakeClock, make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"error": {"code": "invalid_state",
                                                      "message": "The job is not running."}})

    api = make_api(handler)
    with pytest.raises(ApiFailed) as exc:
        api.finish("succeeded", result={"x": 1})
    # the server's own words reach the job's failure reason (api.py now drops the code)
    assert "The job is not running." in str(exc.value)
    assert calls == 1 and clock.sleeps == []


def test_error_without_json_body_shows_the_text(clock: FakeClock,
                                                make_api: Callable[..., RunnerApi]) -> None:
    api = make_api(lambda request: httpx.Response(413, text="Request Entity Too Large"))
    with pytest.raises(ApiFailed) as exc:
        api.request("PUT", "/outputs/x", content=lambda: iter([b"data"]))
    assert "PUT /outputs/x" in str(exc.value)
    assert "Request Entity Too Large" in str(exc.value)


def test_upload_output_resends_the_full_body_after_a_503(
        tmp_path: Path, clock: FakeClock, make_api: Callable[..., RunnerApi]) -> None:
    local = tmp_path / "model.bin"
    data = bytes(range(256)) * (10 * 1024 + 3)  # ~2.5 MiB: several 1 MiB chunks
    local.write_bytes(data)
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT"
        assert request.url.path == "/api/v1/runner/outputs/sub/dir/model.bin"
        bodies.append(request.read())
        if len(bodies) == 1:
            return httpx.Response(503)
        return httpx.Response(201, json={"path": "sub/dir/model.bin", "size": len(data)})

    api = make_api(handler)
    assert api.upload_output("sub/dir/model.bin", local) == {"path": "sub/dir/model.bin",
                                                             "size": len(data)}
    assert len(bodies) == 2
    assert bodies[0] == data and bodies[1] == data


def test_download_blob_writes_the_body(tmp_path: Path, clock: FakeClock,
                                       make_api: Callable[..., RunnerApi]) -> None:
    content = b"x" * (3 << 20)
    digest = "ab" * 32

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v1/runner/blobs/{digest}"
        return httpx.Response(200, content=content)

    api = make_api(handler)
    dest = tmp_path / "blob"
    api.download_blob(digest, dest)
    assert dest.read_bytes() == content


@pytest.mark.parametrize(("status", "error"), [(401, TokenRefused), (404, ApiFailed)])
def test_download_blob_refusals(status: int, error: type[Exception], tmp_path: Path,
                                clock: FakeClock, make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status)

    api = make_api(handler)
    with pytest.raises(error):
        api.download_blob("cd" * 32, tmp_path / "blob")
    assert calls == 1


def test_download_blob_retries_a_broken_connection(tmp_path: Path, clock: FakeClock,
                                                   make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"ok")

    api = make_api(handler)
    api.download_blob("ef" * 32, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == b"ok" and calls == 2


def test_download_blob_rides_through_a_503(tmp_path: Path, clock: FakeClock,
                                           make_api: Callable[..., RunnerApi]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503) if calls == 1 else httpx.Response(200, content=b"ok")

    api = make_api(handler)
    api.download_blob("01" * 32, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == b"ok"
