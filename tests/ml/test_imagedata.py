"""Image data: layouts (class folders, train/val, CSV), every bad input named, the decoded
memory-mapped cache, the collate hook."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import imagedata, textdata

RED, BLUE = (220, 30, 30), (30, 30, 220)


def png(color: tuple[int, int, int], size: int = 16, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color if mode == "RGB" else color[0]).save(buf, "PNG")
    return buf.getvalue()


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def red_blue(n: int = 4, prefix: str = "") -> dict[str, bytes]:
    files = {}
    for i in range(n):
        files[f"{prefix}red/{i}.png"] = png(RED)
        files[f"{prefix}blue/{i}.png"] = png(BLUE)
    return files


def test_class_folders(tmp_path: Path) -> None:
    root = write(tmp_path, {**red_blue(3), "notes.txt": b"x",
                            "predictions/old.png": png(RED)})
    train, val = imagedata.folder_examples(root)
    assert val is None and len(train) == 6
    assert train.paths[0] == "blue/0.png" and train.labels is not None
    assert sorted(set(train.labels)) == ["blue", "red"]


def test_train_val_folders(tmp_path: Path) -> None:
    root = write(tmp_path, {**red_blue(3, "train/"), **red_blue(1, "val/")})
    train, val = imagedata.folder_examples(root)
    assert len(train) == 6 and val is not None and len(val) == 2
    assert val.labels == ["blue", "red"]


def test_image_outside_a_class_folder_is_named(tmp_path: Path) -> None:
    root = write(tmp_path, {**red_blue(2), "stray.png": png(RED)})
    with pytest.raises(ValidationFailed, match=re.escape("'stray.png' is not in a class folder")):
        imagedata.folder_examples(root)
    train, _ = imagedata.folder_examples(root, labelled=False)  # fine for predict
    assert len(train) == 5 and train.labels is None


def test_csv_layout_and_bad_rows(tmp_path: Path) -> None:
    root = write(tmp_path, {"img/a.png": png(RED), "img/b.png": png(BLUE),
                            "labels.csv": b"path,label\nimg/a.png,red\nimg/b.png,blue\n",
                            "bad.csv": b"path,label\nimg/a.png,red\nimg/missing.png,blue\n",
                            "nolabel.csv": b"path,label\nimg/a.png,\n"})
    ex = imagedata.csv_examples(root, "labels.csv", "path", "label")
    assert ex.paths == ["img/a.png", "img/b.png"] and ex.labels == ["red", "blue"]
    with pytest.raises(ValidationFailed) as err:
        imagedata.csv_examples(root, "bad.csv", "path", "label")
    assert all(w in err.value.message for w in ("bad.csv", "row 2", "'path'", "missing.png"))
    with pytest.raises(ValidationFailed, match="no label column 'klass'"):
        imagedata.csv_examples(root, "labels.csv", "path", "klass")
    with pytest.raises(ValidationFailed, match=re.escape("empty label in nolabel.csv, row 1")):
        imagedata.csv_examples(root, "nolabel.csv", "path", "label")
    with pytest.raises(ValidationFailed, match=re.escape("'nope.csv' is not in the dataset")):
        imagedata.csv_examples(root, "nope.csv", "path", "label")


def test_csv_paths_cannot_leave_the_dataset(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(RED))
    root = write(tmp_path / "ds", {"labels.csv": b"path,label\n../outside.png,red\n"})
    with pytest.raises(ValidationFailed, match="does not exist in the dataset"):
        imagedata.csv_examples(root, "labels.csv", "path", "label")


def test_too_few_classes_empty_and_unseen_validation_label(tmp_path: Path) -> None:
    one = imagedata.folder_examples(write(tmp_path / "one", {"red/0.png": png(RED)}))[0]
    with pytest.raises(ValidationFailed, match="at least 2 labels; found 1: 'red'"):
        textdata.label_mapping(one.labels or [])
    empty = imagedata.folder_examples(write(tmp_path / "empty", {"a.txt": b"x"}))[0]
    with pytest.raises(ValidationFailed, match="has no images"):
        imagedata.check_not_empty(empty)
    train, val = imagedata.folder_examples(write(tmp_path / "tv", {
        **red_blue(2, "train/"), "val/green/0.png": png((0, 200, 0))}))
    assert val is not None
    with pytest.raises(ValidationFailed) as err:
        imagedata.check_validation_labels(textdata.label_mapping(train.labels or []), val)
    assert "'green'" in err.value.message and "val/green/0.png" in err.value.message


def test_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    ex = imagedata.folder_examples(write(tmp_path, red_blue(10)))[0]
    a = imagedata.split_examples(ex, 0.2, seed=3)
    b = imagedata.split_examples(ex, 0.2, seed=3)
    assert a[1].paths == b[1].paths and len(a[1]) == 4 and len(a[0]) == 16
    assert sorted(a[1].labels or []) == ["blue", "blue", "red", "red"]


def test_decode_cache_is_written_once_and_memory_mapped(tmp_path: Path) -> None:
    root = write(tmp_path / "ds", {**red_blue(2), "gray/0.png": png((90, 0, 0), 20, "L")})
    ex = imagedata.folder_examples(root)[0]
    labels = textdata.label_mapping(ex.labels or [])
    cache = tmp_path / "cache"
    path = imagedata.decode_to_cache(root, ex, labels, 8, cache, "k")
    table = imagedata.ImageTable(path)
    assert len(table) == 5 and table.pixels.shape == (5, 8, 8, 3)
    assert isinstance(table.pixels, np.memmap)
    batch = table.batch([3, 0])
    assert batch["label"] == [labels["red"], labels["blue"]]
    assert tuple(batch["pixel_values"][0][0, 0]) == RED
    mtime = path.stat().st_mtime_ns
    (root / "red/0.png").write_bytes(b"garbage")  # same key: not decoded again
    assert imagedata.decode_to_cache(root, ex, labels, 8, cache, "k") == path
    assert path.stat().st_mtime_ns == mtime


def test_an_image_that_does_not_decode_is_named_and_leaves_no_cache(tmp_path: Path) -> None:
    root = write(tmp_path / "ds", {**red_blue(2), "red/broken.png": b"\x89PNG not really"})
    ex = imagedata.folder_examples(root)[0]
    cache = tmp_path / "cache"
    with pytest.raises(ValidationFailed,
                       match=re.escape("image 'red/broken.png' cannot be decoded")):
        imagedata.decode_to_cache(root, ex, textdata.label_mapping(ex.labels or []), 8, cache,
                                  "k")
    assert not list(cache.iterdir())


def test_random_shifts_move_training_images_only_seeded_and_within_bounds() -> None:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[3:5, 3:5] = 255  # a 2x2 white square in the middle
    assert imagedata.shift_pixels(32, 0.0625) == 2
    assert imagedata.shift_pixels(8, 0.0) == 0
    collate = imagedata.image_collate((0.5,) * 3, (0.5,) * 3, augment=False, shift=2)
    batch = {"pixel_values": [img] * 64, "label": [0] * 64}
    ev = collate(batch, torch.device("cpu"), False)["pixel_values"]
    assert torch.equal(ev, collate(batch, torch.device("cpu"), False)["pixel_values"])
    assert torch.all(ev[:, :, 3:5, 3:5] == 1.0)
    torch.manual_seed(0)
    tr = collate(batch, torch.device("cpu"), True)["pixel_values"]
    assert tr.shape == (64, 3, 8, 8)
    places = set()
    for x in tr:
        rows, cols = torch.nonzero(x[0] == 1.0, as_tuple=True)
        assert len(rows) == 4  # moved whole, not cut or stretched
        top, left = int(rows.min()), int(cols.min())
        assert 1 <= top <= 5 and 1 <= left <= 5
        places.add((top, left))
    assert len(places) > 5
    torch.manual_seed(0)
    assert torch.equal(collate(batch, torch.device("cpu"), True)["pixel_values"], tr)


def test_collate_normalises_and_flips_only_training_batches() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[:, 0] = 255  # left column white
    collate = imagedata.image_collate((0.5,) * 3, (0.5,) * 3, augment=True)
    batch = {"pixel_values": [img] * 32, "label": [0] * 32}
    ev = collate(batch, torch.device("cpu"), False)
    assert ev["pixel_values"].shape == (32, 3, 4, 4)
    assert torch.all(ev["pixel_values"][:, :, :, 0] == 1.0)
    assert torch.all(ev["pixel_values"][:, :, :, 1:] == -1.0)
    torch.manual_seed(0)
    tr = collate(batch, torch.device("cpu"), True)["pixel_values"]
    flipped = int((tr[:, 0, 0, 3] == 1.0).sum())
    assert 0 < flipped < 32
    torch.manual_seed(0)
    assert torch.equal(collate(batch, torch.device("cpu"), True)["pixel_values"], tr)
