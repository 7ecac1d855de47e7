"""Safe unpacking of zip archives into blobs.

Refused, with a clear message, before any byte is written: absolute paths, '..' segments,
backslashes and other unsafe names (via ``normalize_path``), symbolic links and other
non-regular entries, duplicate names, too many entries, a declared total size over the
limit, and a compression ratio above the limit. While unpacking, the *actual* bytes produced
are counted too, so a forged header cannot smuggle a bomb through.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clowder_ml.errors import UnsafeArchive, ValidationFailed
from clowder_ml.services.paths import normalize_path
from clowder_ml.storage import BlobInfo, LocalBlobStore

CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    max_total_bytes: int
    max_ratio: float
    max_entries: int


def _is_link_or_special(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep st_mode in the high 16 bits; a zero file type means "regular" (Python's
    # own writestr stores bare permission bits).
    kind = stat.S_IFMT(info.external_attr >> 16)
    return info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR)


def check_zip(zf: zipfile.ZipFile, limits: ZipLimits, prefix: str = "") -> list[
        tuple[zipfile.ZipInfo, str]]:
    """Validate every entry; return (entry, dataset path) for the files to unpack."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UnsafeArchive(f"The archive has {len(infos)} entries; the limit is "
                            f"{limits.max_entries}.", "Split it into several archives.")
    out: list[tuple[zipfile.ZipInfo, str]] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if not name:  # only a corrupt archive has one (zipfile's is_dir() fails on it)
            raise UnsafeArchive("The archive has an entry without a name.",
                                "Re-create the archive.")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"Archive entry {name!r} has an absolute path.",
                                "Re-create the archive with relative paths.")
        if ".." in name.replace("\\", "/").split("/"):
            raise UnsafeArchive(f"Archive entry {name!r} points outside the dataset ('..').",
                                "Re-create the archive without '..' in paths.")
        if _is_link_or_special(info):
            raise UnsafeArchive(f"Archive entry {name!r} is a symbolic link or special file.",
                                "Archives may contain only regular files and folders.")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"Archive entry {name!r} is encrypted.",
                                "Upload an archive without a password.")
        try:
            path = normalize_path((prefix.rstrip("/") + "/" if prefix else "") + name)
        except ValidationFailed as exc:
            raise UnsafeArchive(f"Archive entry {name!r} has an unsafe name: {exc.message}",
                                exc.hint) from exc
        if path in seen:
            raise UnsafeArchive(f"Archive entry {name!r} appears twice.")
        seen.add(path)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchive(
                f"The archive unpacks to more than {limits.max_total_bytes} bytes.",
                "Upload the files separately or ask the operator to raise the limit.")
        if info.file_size > 1 << 20 and info.file_size > limits.max_ratio * max(
                info.compress_size, 1):
            raise UnsafeArchive(
                f"Archive entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}"
                f" times (limit {limits.max_ratio:.0f}); this looks like a zip bomb.")
        out.append((info, path))
    return out


def unpack_zip(source: str | Path | IO[bytes], blobs: LocalBlobStore, limits: ZipLimits,
               prefix: str = "") -> dict[str, BlobInfo]:
    """Unpack a zip into blobs; return dataset path -> blob. Nothing is committed here.

    On any error the blobs already written are simply unreferenced (collected later); the
    caller commits a dataset version only on success, so nothing half-unpacked is visible.
    """
    try:
        zf = zipfile.ZipFile(source)
    # zipfile reports corrupt central directories not only as BadZipFile: an undecodable
    # entry name is a UnicodeDecodeError (a ValueError), a bogus "version needed" field a
    # NotImplementedError.
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise UnsafeArchive("The file is not a valid zip archive.",
                            "Check that the upload finished and the file is a .zip.") from exc
    with zf:
        entries = check_zip(zf, limits, prefix)
        if not entries:
            raise UnsafeArchive("The archive contains no files.",
                                "Check that you zipped the right folder.")
        produced = 0
        result: dict[str, BlobInfo] = {}
        for info, path in entries:
            try:
                result[path] = _unpack_entry(zf, info, blobs, limits, produced)
            # Corrupt data surfaces as whatever its decompressor raises (bz2: OSError, lzma:
            # LZMAError), a corrupt local header as ValueError (a negative seek offset, an
            # undecodable name). Blob-store write errors are already StorageError/StorageFull.
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError,
                    NotImplementedError, ValueError, OSError) as exc:
                raise UnsafeArchive(f"Archive entry {info.filename!r} is corrupt or uses an "
                                    f"unsupported compression: {exc}.") from exc
            produced += result[path].size
        return result


def _unpack_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, blobs: LocalBlobStore,
                  limits: ZipLimits, produced: int) -> BlobInfo:
    """Stream one entry into a blob, counting real output against the header and limits."""
    with blobs.writer() as w, zf.open(info) as src:
        written = 0
        while chunk := src.read(CHUNK):
            written += len(chunk)
            produced += len(chunk)
            # Headers can lie: enforce the limits on what really comes out.
            if written > info.file_size or produced > limits.max_total_bytes:
                raise UnsafeArchive(
                    f"Archive entry {info.filename!r} unpacks to more bytes than its "
                    "header declares; refusing it as a zip bomb.")
            w.write(chunk)
        return w.commit()
