"""Copy files out of a sandbox's work folder without trusting anything the program left there.

Rules: symlinks are never followed (not as the file, not as a folder on the way, not at the
destination); names that would leave the folder (absolute, ``..``, empty parts) are refused;
only regular files and folders are copied (FIFOs, sockets and devices are refused); total
bytes, file count and folder depth are capped (folders nested thousands deep would otherwise
exhaust the collector's stack and descriptors). Every refusal is reported with its reason,
never silently dropped. Files are opened relative to already-opened folder descriptors with
``O_NOFOLLOW``, so a swapped path component cannot redirect a read even if the folder changed
under us.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from clowder_ml.errors import ValidationFailed

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class Collected:
    """What :func:`collect` copied (relative POSIX paths), refused (path -> reason), and how
    many bytes it copied."""

    files: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def safe_relpath(name: str) -> PurePosixPath:
    """Validate a path relative to the work folder; raise :class:`ValidationFailed` if it is
    absolute, has ``..``/``.``/empty parts, a NUL byte, or a backslash."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise ValidationFailed(f"Refused output name {name!r}: not a plain relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValidationFailed(f"Refused output name {name!r}: it would leave the work folder")
    return PurePosixPath(*parts)


MAX_DEPTH = 64


def collect(src: Path, dest: Path, names: Iterable[str] | None = None, *,
            max_bytes: int = 1 << 30, max_files: int = 10_000,
            max_depth: int = MAX_DEPTH) -> Collected:
    """Copy regular files from ``src`` (a stopped sandbox's work folder) into ``dest``.

    ``names`` picks files or folders (relative paths); ``None`` means everything. ``dest`` is
    created if missing and must not already contain the paths being written. Folders more
    than ``max_depth`` levels below ``src`` are refused, not entered.
    """
    out = Collected()
    dest.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(src, _DIR_FLAGS)
    dest_fd = os.open(dest, _DIR_FLAGS)
    try:
        if names is None:
            targets: list[tuple[str, PurePosixPath | None]] = [("", None)]
        else:
            targets = []
            for name in names:
                try:
                    wanted = safe_relpath(name)
                except ValidationFailed as exc:
                    out.refused[name] = exc.message
                    continue
                if len(wanted.parts) > max_depth:
                    out.refused[name] = f"deeper than {max_depth} folders"
                    continue
                targets.append((name, wanted))
        for name, rel in targets:
            if rel is None:
                _copy_tree(root_fd, dest_fd, PurePosixPath(), out, max_bytes, max_files,
                           max_depth)
                continue
            try:
                with _open_parent(root_fd, rel) as parent_fd:
                    st = os.stat(rel.name, dir_fd=parent_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        fd = os.open(rel.name, _DIR_FLAGS, dir_fd=parent_fd)
                        try:
                            _copy_tree(fd, dest_fd, rel, out, max_bytes, max_files, max_depth)
                        finally:
                            os.close(fd)
                    else:
                        _copy_entry(parent_fd, rel, st, dest_fd, out, max_bytes, max_files)
            except _Refused as exc:
                out.refused[name] = str(exc)
            except FileNotFoundError:
                out.refused[name] = "not found"
    finally:
        os.close(root_fd)
        os.close(dest_fd)
    return out


class _Refused(Exception):
    pass


@contextlib.contextmanager
def _open_parent(root_fd: int, rel: PurePosixPath) -> Iterator[int]:
    """Open the folder holding ``rel`` by walking each part with O_NOFOLLOW."""
    fd = os.dup(root_fd)
    try:
        for part in rel.parts[:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                # ELOOP/ENOTDIR: the part is a symlink or not a folder.
                raise _Refused(f"'{part}' is not a folder (symlinks are not followed)") from exc
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _copy_tree(dir_fd: int, dest_fd: int, rel: PurePosixPath, out: Collected,
               max_bytes: int, max_files: int, max_depth: int) -> None:
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        child = rel / entry.name
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:
            out.refused[str(child)] = "name is not valid UTF-8"
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if len(child.parts) > max_depth:
                out.refused[str(child)] = f"deeper than {max_depth} folders"
                continue
            try:
                fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                out.refused[str(child)] = f"cannot open folder: {exc.strerror}"
                continue
            try:
                _copy_tree(fd, dest_fd, child, out, max_bytes, max_files, max_depth)
            finally:
                os.close(fd)
        else:
            try:
                _copy_entry(dir_fd, child, st, dest_fd, out, max_bytes, max_files)
            except _Refused as exc:
                out.refused[str(child)] = str(exc)


def _copy_entry(parent_fd: int, rel: PurePosixPath, st: os.stat_result, dest_fd: int,
                out: Collected, max_bytes: int, max_files: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("symlink (not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not a regular file")
    if len(out.files) >= max_files:
        raise _Refused(f"over the file count cap ({max_files})")
    if out.bytes + st.st_size > max_bytes:
        raise _Refused(f"over the size cap ({max_bytes} bytes)")
    try:
        src_fd = os.open(rel.name, _FILE_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise _Refused(f"cannot open: {exc.strerror}") from exc
    try:
        fst = os.fstat(src_fd)
        # The entry we checked must be the file we opened.
        if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(fst.st_mode):
            raise _Refused("changed while being collected")
        with _create_dest(dest_fd, rel) as dst_fd:
            copied = 0
            while True:
                chunk = os.read(src_fd, 1 << 20)
                if not chunk:
                    break
                copied += len(chunk)
                if out.bytes + copied > max_bytes:
                    raise _Refused(f"over the size cap ({max_bytes} bytes)")
                os.write(dst_fd, chunk)
    finally:
        os.close(src_fd)
    out.files.append(str(rel))
    out.bytes += copied


@contextlib.contextmanager
def _create_dest(dest_fd: int, rel: PurePosixPath) -> Iterator[int]:
    """Create ``rel`` under ``dest_fd`` exclusively (never through a symlink); remove the
    partial file if copying fails."""
    fd = os.dup(dest_fd)
    try:
        for part in rel.parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        try:
            dst = os.open(rel.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o644, dir_fd=fd)
        except FileExistsError as exc:
            raise _Refused("already exists at the destination") from exc
        try:
            yield dst
        except BaseException:
            os.close(dst)
            with contextlib.suppress(OSError):
                os.unlink(rel.name, dir_fd=fd)
            raise
        else:
            os.close(dst)
    finally:
        os.close(fd)
