"""Collecting files from a work folder: symlinks never followed, escaping names refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox import SandboxResult, Verdict, collect, safe_relpath

RunPy = Callable[..., SandboxResult]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    (w / "model").mkdir(parents=True)
    (w / "model" / "weights.bin").write_bytes(b"w" * 100)
    (w / "metrics.json").write_text("{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (w / "link_to_secret").symlink_to(secret)
    (w / "link_to_etc").symlink_to("/etc")
    (w / "model" / "up").symlink_to("..")
    os.mkfifo(w / "pipe")
    return w


def test_everything_copies_regular_files_only(work: Path, tmp_path: Path) -> None:
    out = collect(work, tmp_path / "out")
    assert sorted(out.files) == ["metrics.json", "model/weights.bin"]
    assert out.bytes == 102
    assert set(out.refused) == {"link_to_secret", "link_to_etc", "model/up", "pipe"}
    assert "symlink" in out.refused["link_to_secret"]
    assert not (tmp_path / "out" / "link_to_secret").exists()
    assert (tmp_path / "out" / "model" / "weights.bin").read_bytes() == b"w" * 100


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "model/../../secret.txt",
                                  "a//b", "./metrics.json", "", "x\x00y", "model\\..\\x"])
def test_escaping_names_are_refused(work: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationFailed):
        safe_relpath(name)
    out = collect(work, tmp_path / "out", [name])
    assert out.files == [] and name in out.refused


def test_symlinks_on_the_way_are_not_followed(work: Path, tmp_path: Path) -> None:
    out = collect(work, tmp_path / "out",
                  ["link_to_secret", "link_to_etc/passwd", "model/up/metrics.json",
                   "model/weights.bin", "missing.txt"])
    assert out.files == ["model/weights.bin"]
    assert set(out.refused) == {"link_to_secret", "link_to_etc/passwd",
                                "model/up/metrics.json", "missing.txt"}


def test_size_and_count_caps(work: Path, tmp_path: Path) -> None:
    out = collect(work, tmp_path / "a", max_bytes=50)
    assert out.files == ["metrics.json"] and "size cap" in out.refused["model/weights.bin"]
    out = collect(work, tmp_path / "b", max_files=1)
    assert len(out.files) == 1 and any("count cap" in v for v in out.refused.values())


def test_existing_destination_files_are_not_overwritten(work: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "metrics.json").symlink_to(tmp_path / "victim")
    out = collect(work, dest, ["metrics.json"])
    assert out.files == [] and "exists" in out.refused["metrics.json"]
    assert not (tmp_path / "victim").exists()


def test_collect_after_a_sandboxed_run(run_py: RunPy, tmp_path: Path) -> None:
    r = run_py("""
        import os
        os.makedirs('/work/out', exist_ok=True)
        open('/work/out/result.txt', 'w').write('42')
        os.symlink('/etc/passwd', '/work/out/passwd')
        os.symlink('/', '/work/rootlink')
    """, collect_into=tmp_path / "got")
    assert r.verdict is Verdict.OK, r
    assert r.files == ["out/result.txt"]
    assert set(r.refused) == {"out/passwd", "rootlink"}
    assert (tmp_path / "got" / "out" / "result.txt").read_text() == "42"
