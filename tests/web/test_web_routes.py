"""The web UI's route: build files, the app's fallback for its own routes, the
Content-Security-Policy, and server paths that it never shadows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clowder_ml.api import security_headers, web
from tests.conftest import Api

INDEX = b"<!doctype html><title>clowder-ml</title><script type=module src=/assets/app.js>"


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "static"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "app-1a2b.js").write_bytes(b"console.log(1)")
    (root / "robots.txt").write_bytes(b"User-agent: *\n")
    (tmp_path / "secret.txt").write_bytes(b"outside the build")
    monkeypatch.setattr(web, "STATIC_DIR", root)
    return root


@pytest.fixture
def ui(built: Path, make_api: Any) -> Api:
    return make_api()


def test_the_app_answers_its_own_routes_with_index_html(ui: Api) -> None:
    for path in ("/", "/datasets", "/datasets/ds_1/edit?path=config.py", "/jobs/j1",
                 "/models/x:y"):
        r = ui.client.get(path)
        assert r.status_code == 200, path
        assert r.content == INDEX
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache"
        # The UI's policy (no inline script, no eval; Monaco's workers are same-origin).
        assert r.headers["content-security-policy"] == \
            security_headers.UI_CONTENT_SECURITY_POLICY


def test_build_files_are_served_and_assets_cached(ui: Api) -> None:
    r = ui.client.get("/assets/app-1a2b.js")
    assert r.status_code == 200 and r.content == b"console.log(1)"
    assert "immutable" in r.headers["cache-control"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert ui.client.get("/robots.txt").content == b"User-agent: *\n"
    # A missing asset is a 404, not the app (a stale page must not get HTML as script).
    assert ui.client.get("/assets/gone.js").status_code == 404
    assert ui.client.head("/").status_code == 200


def test_no_file_outside_the_build_is_served(ui: Api) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"):
        r = ui.client.get(path)
        assert b"outside the build" not in r.content, path


def test_server_paths_are_never_shadowed(ui: Api) -> None:
    r = ui.client.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = ui.client.get("/api/v1/auth/login")  # POST only: still a 405, not the app
    assert r.status_code == 405
    assert ui.client.get("/api").status_code == 404
    assert ui.client.get("/openapi.json").json()["info"]["title"] == "clowder-ml"
    assert ui.client.get("/readyz").status_code == 200
    assert b"swagger" in ui.client.get("/docs").content.lower()
    assert ui.client.get("/metrics").status_code == 200
    # Other methods on the app's paths are not the app's.
    assert ui.client.post("/datasets").status_code in (404, 405)


def test_without_a_build_the_page_says_how_to_build_it(tmp_path: Path, make_api: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "STATIC_DIR", tmp_path / "nothing")
    api = make_api()
    r = api.client.get("/datasets")
    assert r.status_code == 503 and b"npm" in r.content
    assert api.client.get("/api/v1/users/me", headers=api.h()).status_code == 200


def test_is_server_path() -> None:
    assert web.is_server_path("/api/v1/x") and web.is_server_path("/api")
    assert web.is_server_path("/docs/oauth2-redirect") and web.is_server_path("/metrics")
    assert not web.is_server_path("/apis") and not web.is_server_path("/datasets")
    assert not web.is_server_path("/docsearch")
