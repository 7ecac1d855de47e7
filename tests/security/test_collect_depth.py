"""Found by the attack suite (28_traversal_names): a work folder nested 1500 folders deep made
collection recurse until ``RecursionError`` on the host, holding a descriptor per level, so
``Sandbox.run`` raised instead of returning a verdict. Collection now refuses folders deeper
than ``MAX_DEPTH``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.sandbox.collect import MAX_DEPTH, collect


@pytest.fixture
def src(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    yield work
    # shutil.rmtree (and so pytest's own clean-up) recurses per level: use rm.
    subprocess.run(["rm", "-rf", "--", str(work)], check=True)


def _deep(root: Path, levels: int) -> Path:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):  # relative steps: the full path is longer than PATH_MAX
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"leaf\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return root


def test_a_very_deep_tree_is_refused_not_a_crash(src: Path, tmp_path: Path) -> None:
    (src / "top.txt").write_text("top\n")
    _deep(src, 1500)
    fds_before = len(os.listdir("/proc/self/fd"))
    out = collect(src, tmp_path / "out")
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert out.files == ["top.txt"]
    deep = "/".join(["d"] * (MAX_DEPTH + 1))
    assert out.refused == {deep: f"deeper than {MAX_DEPTH} folders"}


def test_files_at_the_depth_limit_are_still_collected(src: Path, tmp_path: Path) -> None:
    _deep(src, MAX_DEPTH - 1)
    out = collect(src, tmp_path / "out")
    assert out.files == ["/".join(["d"] * (MAX_DEPTH - 1) + ["leaf.txt"])]
    assert out.refused == {}


def test_a_too_deep_name_is_refused(src: Path, tmp_path: Path) -> None:
    name = "/".join(["d"] * (MAX_DEPTH + 1))
    out = collect(src, tmp_path / "out", [name, "missing.txt"])
    assert out.refused == {name: f"deeper than {MAX_DEPTH} folders",
                           "missing.txt": "not found"}
