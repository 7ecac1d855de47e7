"""Image classification data: finding labelled images, checking them, and decoding them once
into a memory-mapped cache that training reads without decoding again.

Two layouts of a dataset version (paths relative to its root):

* Folders: ``<class>/<file>`` (the class is the top folder; deeper folders belong to it), or
  ``train/<class>/<file>`` with an optional ``val/`` (or ``validation/``) next to it. Images
  directly in the root have no label (fine for predict, refused for fine-tune).
  ``predictions/`` (earlier predictions) is never data.
* A CSV (``csv_file``) with a path column and, for training, a label column. Paths are
  relative to the dataset root (or to the CSV's folder). Rows are numbered from 1, the
  header not counted, as in text data errors.

Every problem is a ``ValidationFailed`` naming the file, and for a CSV the row and column:
a path that does not exist, an image that does not decode, an empty label, an empty
dataset, fewer than two classes, a validation label training never saw.

Decoded pixels: uint8 ``(n, size, size, 3)`` RGB (bilinear resize, no crop) in a ``.u8``
file with a ``.json`` sidecar, written atomically under a key derived from everything that
determines them (input digests, layout params, image size); a second run with the same key
maps the file and decodes nothing.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml.textdata import MAX_VALIDATION_FRACTION

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation")
SKIP_DIRS = ("predictions",)
DECODE_VERSION = "1"  # bump when decoding changes: it is part of every cache key


@dataclass
class ImageExamples:
    """Images (paths relative to the dataset root) with their labels and where each was
    named (``where``: the file itself, or "labels.csv, row 3, column 'path'")."""

    paths: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    where: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str, label: str | None, where: str) -> None:
        self.paths.append(path)
        self.where.append(where)
        if self.labels is not None:
            self.labels.append(label or "")

    def select(self, indices: Sequence[int]) -> ImageExamples:
        return ImageExamples(paths=[self.paths[i] for i in indices],
                             labels=None if self.labels is None
                             else [self.labels[i] for i in indices],
                             where=[self.where[i] for i in indices])


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _image_files(root: Path) -> list[str]:
    """Image paths under ``root`` (relative, POSIX, sorted), skipping hidden files."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image(name):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def _from_folders(root: Path, paths: list[str], strip: int, labelled: bool) -> ImageExamples:
    """Labels are class folder names: required when ``labelled``, else kept when every
    image has one."""
    with_labels = labelled or all(len(p.split("/")) - strip >= 2 for p in paths)
    ex = ImageExamples(labels=[] if with_labels else None)
    for rel in paths:
        parts = rel.split("/")[strip:]
        if labelled and len(parts) < 2:
            raise ValidationFailed(
                f"image {rel!r} is not in a class folder",
                hint="put each image in a folder named after its class "
                     "(cat/1.png, dog/2.png), or give --param csv_file=...")
        ex.add(rel, parts[0] if len(parts) >= 2 else None, rel)
    return ex


def folder_examples(root: Path, labelled: bool = True
                    ) -> tuple[ImageExamples, ImageExamples | None]:
    """(training, validation or None) from the folder layout (see the module doc).

    With ``labelled`` False images without a class folder are accepted; the examples then
    have labels (the folder names) only when every image is in a class folder.
    """
    paths = [p for p in _image_files(root) if p.split("/")[0] not in SKIP_DIRS]
    top = {p.split("/")[0] for p in paths if "/" in p}
    train_dir = next((d for d in TRAIN_DIRS if d in top), None)
    if train_dir is not None:
        val_dir = next((d for d in VAL_DIRS if d in top), None)
        train = _from_folders(root, [p for p in paths if p.split("/")[0] == train_dir], 1,
                              labelled)
        val = (_from_folders(root, [p for p in paths if p.split("/")[0] == val_dir], 1,
                             labelled) if val_dir else None)
        return train, val
    return _from_folders(root, paths, 0, labelled), None


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def csv_examples(root: Path, csv_file: str, path_column: str, label_column: str | None
                 ) -> ImageExamples:
    """The images a CSV lists, checked: the file and columns exist, every path names an
    image inside the dataset, every label is non-empty."""
    table = root / csv_file
    if not table.is_file() or not _inside(root, table):
        raise ValidationFailed(f"the CSV file {csv_file!r} is not in the dataset",
                               hint="upload it, or name its path with --param csv_file=...")
    ex = ImageExamples(labels=[] if label_column is not None else None)
    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            for role, column in (("path", path_column), ("label", label_column)):
                if column is not None and column not in header:
                    raise ValidationFailed(
                        f"{csv_file} has no {role} column {column!r}; columns: "
                        f"{', '.join(repr(h) for h in header) or 'none'}",
                        hint=f"set --param {role}_column=... to one of its columns")
            for row_number, row in enumerate(reader, start=1):
                ex.add(*_csv_row(root, table, csv_file, row_number, row, path_column,
                                 label_column))
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"{csv_file} is not valid UTF-8 text ({exc.reason} at byte "
                               f"{exc.start})", hint="save the CSV as UTF-8") from None
    return ex


def _csv_row(root: Path, table: Path, csv_file: str, row: int, values: dict[str, Any],
             path_column: str, label_column: str | None) -> tuple[str, str | None, str]:
    where = f"{csv_file}, row {row}, column {path_column!r}"
    value = (values.get(path_column) or "").strip()
    if not value:
        raise ValidationFailed(f"empty image path in {where}")
    found = next((c for c in (root / value, table.parent / value)
                  if c.is_file() and _inside(root, c)), None)
    if found is None:
        raise ValidationFailed(f"image {value!r} in {where} does not exist in the dataset",
                               hint="paths are relative to the dataset root (or the CSV's "
                                    "folder); upload the image or fix the row")
    if not is_image(found.name):
        raise ValidationFailed(f"{value!r} in {where} is not an image "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    label: str | None = None
    if label_column is not None:
        label = (values.get(label_column) or "").strip()
        if not label:
            raise ValidationFailed(f"empty label in {csv_file}, row {row}, column "
                                   f"{label_column!r}")
    return found.resolve().relative_to(root.resolve()).as_posix(), label, where


def check_not_empty(ex: ImageExamples, what: str = "dataset") -> None:
    if not len(ex):
        raise ValidationFailed(
            f"{what} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            hint="upload images in class folders (cat/1.png, dog/2.png) or a CSV of "
                 "path,label")


def check_validation_labels(label_map: dict[str, int], val: ImageExamples) -> None:
    """Raise at the first validation image whose label training never saw (naming it)."""
    for label, where in zip(val.labels or [], val.where, strict=False):
        if label not in label_map:
            raise ValidationFailed(
                f"label {label!r} of {where} (validation data) does not occur in the "
                f"training data; known labels: {', '.join(repr(k) for k in sorted(label_map))}",
                hint="fix or drop that image, or add training images of that class")


def split_examples(ex: ImageExamples, fraction: float, seed: int
                   ) -> tuple[ImageExamples, ImageExamples]:
    """Stratified, seeded split: (train, validation); each class keeps at least one training
    image, validation is never empty; both keep the input order."""
    if not 0 < fraction <= MAX_VALIDATION_FRACTION:
        raise ValidationFailed(f"validation_split must be in (0, {MAX_VALIDATION_FRACTION}]; "
                               f"got {fraction}")
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not security
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(ex.labels or [""] * len(ex)):
        groups[label].append(i)
    chosen: list[int] = []
    spare: list[int] = []
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        take = min(round(len(members) * fraction), len(members) - 1)
        chosen.extend(members[:take])
        spare.extend(members[take:-1])
    if not chosen:
        if not spare:
            raise ValidationFailed(f"too few images to split off validation data ({len(ex)})",
                                   hint="add images, or give a val/ folder")
        chosen.append(min(spare))
    picked = set(chosen)
    return (ex.select([i for i in range(len(ex)) if i not in picked]),
            ex.select(sorted(picked)))


def typical_size(root: Path, ex: ImageExamples, sample: int = 256) -> int | None:
    """The median longer side, in pixels, of up to ``sample`` of the images (evenly spread
    over the list, so the answer is the same every time); None when none can be read. Only
    the headers are read: an image that cannot be opened is left to the decoder to name."""
    if not len(ex):
        return None
    step = max(1, len(ex) // sample)
    sides: list[int] = []
    for rel in ex.paths[::step][:sample]:
        try:
            with Image.open(root / rel) as image:
                sides.append(max(image.size))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    if not sides:
        return None
    return sorted(sides)[len(sides) // 2]


# --------------------------------------------------------------------------- decoding


def decode_image(path: Path, size: int, name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """One image as uint8 RGB ``(size, size, 3)``; ValidationFailed naming ``name`` when
    it does not decode (or is a decompression bomb)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                rgb = image.convert("RGB")
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationFailed(f"image {name!r} cannot be decoded: {reason[:200]}",
                               hint="re-export or remove that file") from None


def iter_decoded(root: Path, ex: ImageExamples, size: int, batch: int = 64
                 ) -> Iterator[tuple[int, np.ndarray[Any, np.dtype[np.uint8]]]]:
    """(start index, uint8 ``(k, size, size, 3)``) for consecutive chunks of ``ex``."""
    for start in range(0, len(ex), batch):
        names = ex.paths[start:start + batch]
        yield start, np.stack([decode_image(root / n, size, n) for n in names])


def decode_to_cache(root: Path, ex: ImageExamples, label_map: dict[str, int] | None,
                    size: int, cache_dir: Path, key: str) -> Path:
    """Decode ``ex`` once into ``cache_dir/<key>.u8`` (+ ``.json``); returns the ``.u8``.

    Reused as is when the key was done before. Decoding errors name the image and leave
    no cache file behind.
    """
    out = cache_dir / f"{key}.u8"
    meta = cache_dir / f"{key}.json"
    if out.is_file() and meta.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".u8", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if len(ex):
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(ex), size, size, 3))
            for start, pixels in iter_decoded(root, ex, size):
                arr[start:start + len(pixels)] = pixels
            arr.flush()
            del arr
        else:
            with open(tmp, "wb") as fh:
                np.save(fh, np.zeros((0, size, size, 3), dtype=np.uint8))
        labels = ([label_map[x] for x in ex.labels]
                  if ex.labels is not None and label_map is not None else None)
        meta.write_text(json.dumps({"n": len(ex), "size": size, "labels": labels,
                                    "paths": ex.paths}))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


class ImageTable:
    """Decoded images from :func:`decode_to_cache`, memory-mapped read-only.

    A ``train_loop`` data source: ``batch(indices)`` gives ``pixel_values`` (uint8 arrays
    ``(size, size, 3)``) and ``label`` (ints) aligned with ``indices``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pixels: np.ndarray[Any, np.dtype[np.uint8]] = np.load(path, mmap_mode="r")
        info = json.loads(path.with_suffix(".json").read_text())
        self.labels: list[int] | None = info["labels"]
        self.size = int(info["size"])

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def lengths(self) -> list[int]:
        return [1] * len(self)

    def batch(self, indices: list[int]) -> dict[str, list[Any]]:
        pixels = np.asarray(self.pixels[indices])
        return {"pixel_values": list(pixels),
                "label": [self.labels[i] for i in indices] if self.labels is not None else []}


def to_tensor(pixels: Sequence[np.ndarray[Any, np.dtype[np.uint8]]], mean: Sequence[float],
              std: Sequence[float], device: torch.device) -> torch.Tensor:
    """uint8 HWC images -> float ``(n, 3, H, W)``: ``(x/255 - mean) / std``."""
    x = torch.from_numpy(np.stack(pixels)).to(device).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def shift_pixels(size: int, fraction: float) -> int:
    """The largest random shift in pixels for ``fraction`` of an image ``size`` wide (0: none)."""
    return max(0, round(size * fraction))


def random_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Move each image of ``x`` (``(n, c, h, w)``) by its own random offset of at most
    ``shift`` pixels in each direction, repeating the edge pixels into the gap. The offsets
    are drawn from the global torch RNG (on the CPU: the same draws on any device)."""
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (n, 2)).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w]
                        for i, (dy, dx) in enumerate(offsets)])


def image_collate(mean: Sequence[float], std: Sequence[float], augment: bool, shift: int = 0
                  ) -> Callable[[dict[str, list[Any]], torch.device, bool],
                                dict[str, torch.Tensor]]:
    """A ``train_loop`` collate hook for :class:`ImageTable` batches.

    With ``augment`` each training image is flipped left-right with probability 1/2; with
    ``shift`` > 0 each training image is moved by up to ``shift`` pixels in x and y
    (:func:`random_shift`). Both draw from the global torch RNG (seeded, and captured by
    checkpoints: resumes repeat the draws). Evaluation batches are never augmented.
    """
    def collate(batch: dict[str, list[Any]], device: torch.device, training: bool
                ) -> dict[str, torch.Tensor]:
        x = to_tensor(batch["pixel_values"], mean, std, device)
        if augment and training:
            flip = torch.rand(x.shape[0]) < 0.5
            if bool(flip.any()):
                x[flip.to(device)] = torch.flip(x[flip.to(device)], dims=(3,))
        if shift and training:
            x = random_shift(x, shift)
        return {"pixel_values": x,
                "labels": torch.tensor(batch["label"], dtype=torch.long, device=device)}

    return collate
