"""Co-editing over the documents WebSocket against a real server: convergence, read-only
users whose changes the server drops, save as a numbered version, history, drafts kept
across a restart, and refusals (no session, no access, other origin, not text)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import ServerProcess
from tests.web.yclient import editor, refusal

pytestmark = pytest.mark.timeout(120)


class Site:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.admin = srv.token()
        self.tokens: dict[str, str] = {}

    def http(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.srv.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})

    def user(self, name: str) -> str:
        if name not in self.tokens:
            with self.http(self.admin) as h:
                r = h.post("/api/v1/users", json={"username": name,
                                                  "password": f"{name}-password-1"})
                assert r.status_code == 201, r.text
            self.tokens[name] = self.srv.token(name, f"{name}-password-1")
        return self.tokens[name]

    def dataset(self, name: str, files: dict[str, bytes], token: str | None = None,
                ) -> dict[str, Any]:
        with self.http(token or self.admin) as h:
            r = h.post("/api/v1/datasets", json={"name": name})
            assert r.status_code == 201, r.text
            for path, data in files.items():
                r = h.post(f"/api/v1/datasets/{name}/files", files={"file": ("x", data)},
                           data={"path": path})
                assert r.status_code == 201, r.text
            return dict(h.get(f"/api/v1/datasets/{name}").json())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    srv = ServerProcess(tmp_path_factory.mktemp("docs") / "data")
    srv.start()
    try:
        yield Site(srv)
    finally:
        srv.stop()


def test_two_editors_converge_on_the_file_text(site: Site) -> None:
    ds = site.dataset("conv", {"config.py": b"lr = 0.1\n"})

    async def scenario() -> None:
        async with editor(site.srv.url, ds["id"], "config.py", site.admin) as a, \
                editor(site.srv.url, ds["id"], "config.py", site.admin) as b:
            assert str(a.text) == str(b.text) == "lr = 0.1\n"
            with a.doc.transaction():
                a.text.insert(len(a.text), "epochs = 2\n")
            with b.doc.transaction():
                b.text.insert(0, "# tuned\n")
            both = "# tuned\nlr = 0.1\nepochs = 2\n"
            assert await a.wait_for(lambda t: t == both) == both
            assert await b.wait_for(lambda t: t == both) == both

    anyio.run(scenario)


def test_editors_arriving_together_share_one_room_that_outlives_their_visits(
        site: Site) -> None:
    ds = site.dataset("together", {"config.py": b"n = 0\n"})
    url = site.srv.url

    async def one(i: int) -> None:
        async with editor(url, ds["id"], "config.py", site.admin) as e:
            with e.doc.transaction():
                e.text.insert(len(e.text), f"x{i} = {i}\n")
            await e.wait_for(lambda t: all(f"x{k} = {k}" in t for k in range(4)))

    async def scenario() -> None:
        # Four first editors at once: the room is loaded and started once.
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
        # Everyone left (the room closed, its draft compacted); leave and come back quickly.
        for round_ in range(3):
            async with editor(url, ds["id"], "config.py", site.admin) as e:
                assert all(f"x{i} = {i}" in str(e.text) for i in range(4))
                assert str(e.text).startswith("n = 0\n")
                with e.doc.transaction():
                    e.text.insert(len(e.text), f"r{round_} = 1\n")
                async with editor(url, ds["id"], "config.py", site.admin) as witness:
                    await witness.wait_for(lambda t, r=round_: f"r{r} = 1" in t)

    anyio.run(scenario)


def test_a_reader_sees_changes_but_the_server_drops_theirs(site: Site) -> None:
    ds = site.dataset("shared", {"train.py": b"print(1)\n"})
    reader = site.user("reader")
    with site.http(site.admin) as h:
        assert h.put(f"/api/v1/datasets/{ds['id']}/shares/reader",
                     json={"permission": "read"}).status_code == 200

    async def scenario() -> None:
        async with editor(site.srv.url, ds["id"], "train.py", site.admin) as w, \
                editor(site.srv.url, ds["id"], "train.py", reader) as r:
            with r.doc.transaction():
                r.text.insert(0, "import os\n")  # a read-only client that edits anyway
            with w.doc.transaction():
                w.text.insert(len(w.text), "print(2)\n")
            await r.wait_for(lambda t: t.endswith("print(2)\n"))
            await w.wait_for(lambda t: t.endswith("print(2)\n"))
            assert "import os" not in str(w.text)
        # A fresh editor gets the server's text: the reader's change never reached it.
        async with editor(site.srv.url, ds["id"], "train.py", site.admin) as fresh:
            assert str(fresh.text) == "print(1)\nprint(2)\n"

    anyio.run(scenario)
    with site.http(reader) as h:
        r = h.post("/api/v1/documents/save", json={"dataset": ds["id"], "path": "train.py"})
        assert r.status_code == 403, r.text


def test_save_makes_a_numbered_version_and_history_lists_it(site: Site) -> None:
    ds = site.dataset("saves", {"data.csv": b"a\n1\n", "config.py": b"x = 1\n"})

    async def edit() -> None:
        async with editor(site.srv.url, ds["id"], "config.py", site.admin) as a:
            with a.doc.transaction():
                a.text.insert(len(a.text), "y = 2\n")
            # The server has it once a second editor sees it.
            async with editor(site.srv.url, ds["id"], "config.py", site.admin) as b:
                await b.wait_for(lambda t: "y = 2" in t)

    anyio.run(edit)
    with site.http(site.admin) as h:
        r = h.post("/api/v1/documents/save",
                   json={"dataset": ds["id"], "path": "config.py", "message": "add y"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["changed"] is True and out["version"]["number"] == 3
        assert h.get(f"/api/v1/datasets/{ds['id']}/files/config.py").content == \
            b"x = 1\ny = 2\n"
        # The other file is carried over unchanged.
        assert h.get(f"/api/v1/datasets/{ds['id']}/files/data.csv").content == b"a\n1\n"
        again = h.post("/api/v1/documents/save", json={"dataset": ds["id"],
                                                       "path": "config.py"}).json()
        assert again["changed"] is False and again["version"]["number"] == 3
        history = h.get("/api/v1/documents/history",
                        params={"dataset": ds["id"], "path": "config.py"}).json()
        # Added in version 2 (the second upload), changed in 3; version 1 had no config.py.
        assert [(r["version"], r["message"]) for r in history] == [(3, "add y"),
                                                                   (2, "add files")]
        assert history[0]["author"] == "admin" and history[0]["size"] == 12
        none = h.post("/api/v1/documents/save", json={"dataset": ds["id"], "path": "new.py"})
        assert none.status_code == 404 and "draft" in none.json()["error"]["message"]


def test_a_new_file_is_saved_from_an_empty_draft(site: Site) -> None:
    ds = site.dataset("newfile", {})

    async def edit() -> None:
        async with editor(site.srv.url, ds["id"], "src/preprocess.py", site.admin) as a:
            assert str(a.text) == ""
            with a.doc.transaction():
                a.text.insert(0, "def preprocess(ex):\n    return ex\n")
            async with editor(site.srv.url, ds["id"], "src/preprocess.py", site.admin) as b:
                await b.wait_for(lambda t: t.startswith("def preprocess"))

    anyio.run(edit)
    with site.http(site.admin) as h:
        out = h.post("/api/v1/documents/save",
                     json={"dataset": ds["id"], "path": "src/preprocess.py"}).json()
        assert out["version"]["number"] == 1 and out["path"] == "src/preprocess.py"


def test_an_unchanged_draft_follows_the_file_and_a_changed_one_is_kept(site: Site) -> None:
    ds = site.dataset("follow", {"config.py": b"a = 1\n"})
    url = site.srv.url

    def upload(content: bytes) -> None:
        with site.http(site.admin) as h:
            r = h.post(f"/api/v1/datasets/{ds['id']}/files", files={"file": ("x", content)},
                       data={"path": "config.py"})
            assert r.status_code == 201, r.text

    async def text_now() -> str:
        async with editor(url, ds["id"], "config.py", site.admin) as e:
            return str(e.text)

    async def append(line: str) -> None:
        async with editor(url, ds["id"], "config.py", site.admin) as e:
            with e.doc.transaction():
                e.text.insert(len(e.text), line)
            async with editor(url, ds["id"], "config.py", site.admin) as witness:
                await witness.wait_for(lambda t: t.endswith(line))

    assert anyio.run(text_now) == "a = 1\n"   # a draft exists now, nobody changed it
    upload(b"a = 2\n")
    assert anyio.run(text_now) == "a = 2\n"   # so it follows the newer upload
    anyio.run(append, "b = 3\n")               # an unsaved change...
    upload(b"a = 4\n")
    assert anyio.run(text_now) == "a = 2\nb = 3\n"  # ...is kept over a newer upload
    with site.http(site.admin) as h:
        saved = h.post("/api/v1/documents/save", json={"dataset": ds["id"],
                                                       "path": "config.py"}).json()
        assert saved["changed"] is True
    upload(b"a = 5\n")                           # saved, so unchanged again: it follows
    assert anyio.run(text_now) == "a = 5\n"


def test_refusals_close_with_the_status_as_code(site: Site) -> None:
    ds = site.dataset("private", {"config.py": b"x = 1\n", "blob.bin": b"\xff\xfe\x00"})
    stranger = site.user("stranger")
    url = site.srv.url

    async def scenario() -> None:
        code, _ = await refusal(url, ds["id"], "config.py")
        assert code == 4401
        code, reason = await refusal(url, ds["id"], "config.py", stranger)
        assert code == 4404 and "not found" in reason.lower()
        code, _ = await refusal(url, "ds_missing", "config.py", site.admin)
        assert code == 4404
        code, _ = await refusal(url, ds["id"], "config.py", site.admin,
                                origin="http://evil.example")
        assert code == 4403
        code, reason = await refusal(url, ds["id"], "blob.bin", site.admin)
        assert code == 4422 and "UTF-8" in reason
        code, _ = await refusal(url, ds["id"], "../etc/passwd", site.admin)
        assert code == 4422
        # The page's own origin is accepted.
        async with editor(url, ds["id"], "config.py", site.admin, origin=url) as e:
            assert str(e.text) == "x = 1\n"

    anyio.run(scenario)


def test_a_draft_survives_a_server_restart(site: Site) -> None:
    """Last in the module: it kills and restarts the module's server."""
    srv = site.srv
    ds = site.dataset("restart", {"config.py": b"a = 1\n"})

    async def edit() -> None:
        async with editor(srv.url, ds["id"], "config.py", site.admin) as a:
            with a.doc.transaction():
                a.text.insert(len(a.text), "b = 2\n")
            async with editor(srv.url, ds["id"], "config.py", site.admin) as b:
                await b.wait_for(lambda t: "b = 2" in t)

    anyio.run(edit)
    srv.kill()  # no clean shutdown: the appended updates are all there is
    srv.start()

    async def reopen() -> str:
        async with editor(srv.url, ds["id"], "config.py", site.admin) as e:
            return str(e.text)

    assert anyio.run(reopen) == "a = 1\nb = 2\n"
    with site.http(site.admin) as h:
        # Unsaved: the dataset still has the old file.
        assert h.get(f"/api/v1/datasets/{ds['id']}/files/config.py").content == b"a = 1\n"
