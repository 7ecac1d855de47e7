"""profile_dataset: hand-computed figures on small files built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clowder_ml.errors import ValidationFailed
from clowder_ml.tasks import dataset_profile
from clowder_ml.tasks.dataset_profile import profile_dataset

# id,score,name,ok,label -- row 4 repeats row 1; row 3 has an empty score and an empty name;
# row 5 has an empty label; "NA" in the numeric column is a null too.
CSV_TEXT = (
    "id,score,name,ok,label\n"
    "1,0.5,ann,true,cat\n"
    "2,1.5,bob,false,dog\n"
    "3,,,true,cat\n"
    "1,0.5,ann,true,cat\n"
    "5,NA,eve,false,\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def table(result: dict[str, Any], path: str) -> dict[str, Any]:
    return next(t for t in result["tables"] if t["path"] == path)


def columns(tab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in tab["columns"]}


def test_csv_figures(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "train.csv", CSV_TEXT)
    result = profile_dataset(tmp_path)

    assert result["files"] == 1
    assert result["bytes"] == len(CSV_TEXT)
    assert result["errors"] == []
    tab = table(result, "sub/train.csv")
    assert tab["format"] == "csv"
    assert tab["rows"] == 5
    assert tab["duplicate_rows"] == 1
    assert tab["truncated"] is False
    assert [c["name"] for c in tab["columns"]] == ["id", "score", "name", "ok", "label"]
    cols = columns(tab)
    assert cols["id"] == {"name": "id", "type": "integer", "missing": 0, "distinct": 4}
    assert cols["score"] == {"name": "score", "type": "float", "missing": 2, "distinct": 2}
    assert cols["name"] == {"name": "name", "type": "string", "missing": 1, "distinct": 3}
    assert cols["ok"] == {"name": "ok", "type": "boolean", "missing": 0, "distinct": 2}
    assert cols["label"]["missing"] == 1
    assert tab["label"] == {
        "column": "label",
        "distribution": {"cat": 3, "dog": 1},
        "missing": 1,
        "other": 0,
    }


def test_explicit_label_column(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", CSV_TEXT)
    tab = table(profile_dataset(tmp_path, label="ok"), "train.csv")
    assert tab["label"] == {
        "column": "ok",
        "distribution": {"true": 3, "false": 2},
        "missing": 0,
        "other": 0,
    }


def test_label_param_naming_a_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", CSV_TEXT)
    result = profile_dataset(tmp_path, label="species")
    tab = table(result, "train.csv")
    assert tab["label"] is None
    assert tab["rows"] == 5  # still profiled
    [error] = result["errors"]
    assert error["path"] == "train.csv"
    assert "species" in error["error"]
    assert "id, score, name, ok, label" in error["error"]


def test_no_label_column(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "x,z\n1,2\n")
    assert table(profile_dataset(tmp_path), "a.csv")["label"] is None


def test_tsv_with_auto_detected_target(tmp_path: Path) -> None:
    write(tmp_path / "data.TSV", "text\tTarget\nhello world\t1\nbye\t0\nhi\t1\n")
    tab = table(profile_dataset(tmp_path), "data.TSV")
    assert tab["format"] == "tsv"
    assert tab["rows"] == 3
    assert columns(tab)["text"]["type"] == "string"
    assert columns(tab)["Target"]["type"] == "integer"
    assert tab["label"]["column"] == "Target"
    assert tab["label"]["distribution"] == {"1": 2, "0": 1}


def test_csv_type_widened_after_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny block makes pyarrow infer "a" as int64 and "b" as null from the first rows only.
    monkeypatch.setattr(dataset_profile, "CSV_BLOCK_SIZE", 64)
    write(tmp_path / "w.csv", "a,b,c\n" + "1,,x\n" * 40 + "1.5,7,y\n" + "2,oops,z\n")
    result = profile_dataset(tmp_path)
    assert result["errors"] == []
    cols = columns(table(result, "w.csv"))
    assert cols["a"]["type"] == "float"
    assert cols["a"]["distinct"] == 3  # 1, 1.5, 2
    assert cols["b"]["type"] == "string"
    assert cols["b"]["missing"] == 40
    assert table(result, "w.csv")["duplicate_rows"] == 39


def test_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two-line chunks: "v" is int in the first chunk, float in the second; "when" appears late.
    monkeypatch.setattr(dataset_profile, "JSONL_CHUNK_LINES", 2)
    rows = [
        {"v": 1, "mixed": 1, "class": "a"},
        {"v": 2, "mixed": 2, "class": "b"},
        {"class": "a", "v": 1, "mixed": 1},  # same as row 1, keys reordered
        {"v": 2.5, "mixed": "two", "class": None, "when": "2024-01-02T03:04:05"},
        {"v": float("nan"), "mixed": True, "class": "a", "extra": None},
    ]
    text = (
        "\n".join(json.dumps(r) for r in rows[:3])
        + "\n\n"
        + "\n".join(json.dumps(r) for r in rows[3:])
    )
    write(tmp_path / "d.ndjson", text)
    tab = table(profile_dataset(tmp_path), "d.ndjson")
    assert tab["format"] == "jsonl"
    assert tab["rows"] == 5
    assert tab["duplicate_rows"] == 1
    cols = columns(tab)
    assert cols["v"] == {"name": "v", "type": "float", "missing": 1, "distinct": 3}
    assert cols["mixed"]["type"] == "string"
    assert cols["when"] == {"name": "when", "type": "datetime", "missing": 4, "distinct": 1}
    assert cols["extra"] == {"name": "extra", "type": "other", "missing": 5, "distinct": 0}
    assert tab["label"]["column"] == "class"
    assert tab["label"]["distribution"] == {"a": 3, "b": 1}
    assert tab["label"]["missing"] == 1


def test_jsonl_bad_line_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": \n')
    write(tmp_path / "list.jsonl", "[1, 2]\n")
    result = profile_dataset(tmp_path)
    assert result["tables"] == []
    errors = {e["path"]: e["error"] for e in result["errors"]}
    assert "line 2" in errors["bad.jsonl"]
    assert "expected a JSON object" in errors["list.jsonl"]


def test_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_profile, "PARQUET_BATCH_ROWS", 2)
    data = pa.table(
        {
            "n": pa.array([1, 2, None, 2, 1], pa.int32()),
            "f": pa.array([0.5, float("nan"), 1.0, 2.0, 0.5]),
            "cat": pa.array(["x", "y", "x", "y", "x"]).dictionary_encode(),
            "ts": pa.array([0, 1, 2, 3, 0], pa.timestamp("s")),
            "tags": pa.array([[1], [2], [], [2], [1]]),
            "y": pa.array([True, False, True, False, True]),
        }
    )
    pq.write_table(data, tmp_path / "t.pq")
    tab = table(profile_dataset(tmp_path), "t.pq")
    assert tab["format"] == "parquet"
    assert tab["rows"] == 5
    assert tab["duplicate_rows"] == 1  # row 5 repeats row 1
    cols = columns(tab)
    assert cols["n"] == {"name": "n", "type": "integer", "missing": 1, "distinct": 2}
    assert cols["f"] == {"name": "f", "type": "float", "missing": 1, "distinct": 3}
    assert cols["cat"]["type"] == "string"
    assert cols["ts"]["type"] == "datetime"
    assert cols["tags"]["type"] == "other"
    assert cols["tags"]["distinct"] == 3
    assert tab["label"]["distribution"] == {"true": 3, "false": 2}


def test_max_rows_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_profile, "PARQUET_BATCH_ROWS", 2)
    write(tmp_path / "a.csv", CSV_TEXT)
    write(tmp_path / "b.jsonl", "".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    pq.write_table(pa.table({"i": list(range(10))}), tmp_path / "c.parquet")
    write(tmp_path / "exact.csv", "i\n1\n2\n3\n")
    result = profile_dataset(tmp_path, max_rows=3)
    for path in ("a.csv", "b.jsonl", "c.parquet"):
        tab = table(result, path)
        assert (tab["rows"], tab["truncated"]) == (3, True), path
    exact = table(result, "exact.csv")
    assert (exact["rows"], exact["truncated"]) == (3, False)
    assert table(result, "a.csv")["duplicate_rows"] == 0  # the copy is row 4, not read


def test_ragged_csv_is_reported_not_fatal(tmp_path: Path) -> None:
    write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    write(tmp_path / "good.csv", "a\n1\n")
    result = profile_dataset(tmp_path)
    assert [t["path"] for t in result["tables"]] == ["good.csv"]
    [error] = result["errors"]
    assert error["path"] == "bad.csv"
    assert "Expected 2 columns" in error["error"]
    assert "\n" not in error["error"]


def make_image(path: Path, size: tuple[int, int], fmt: str, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt)


def test_image_folder(tmp_path: Path) -> None:
    make_image(tmp_path / "cats" / "1.png", (10, 20), "PNG")
    make_image(tmp_path / "cats" / "2.jpg", (30, 40), "JPEG")
    make_image(tmp_path / "dogs" / "1.PNG", (20, 30), "PNG", mode="L")
    make_image(tmp_path / "top.png", (8, 8), "PNG", mode="RGBA")
    write(tmp_path / "dogs" / "broken.png", "not an image at all")
    write(tmp_path / "README.md", "hello")
    result = profile_dataset(tmp_path)

    images = result["images"]
    assert images["count"] == 4
    image_bytes = sum(
        (tmp_path / p).stat().st_size for p in ("cats/1.png", "cats/2.jpg", "dogs/1.PNG", "top.png")
    )
    assert images["bytes"] == image_bytes
    assert images["formats"] == {"JPEG": 1, "PNG": 3}
    assert images["modes"] == {"L": 1, "RGB": 2, "RGBA": 1}
    assert images["by_folder"] == {".": 1, "cats": 2, "dogs": 1}
    assert images["width"] == {"min": 8, "max": 30, "mean": 17.0}
    assert images["height"] == {"min": 8, "max": 40, "mean": 24.5}
    assert images["unreadable"] == ["dogs/broken.png"]
    assert images["unreadable_count"] == 1
    assert result["other_files"] == 1
    assert result["files"] == 6
    assert result["tables"] == []
    assert result["errors"] == []


def test_no_images_gives_none(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x")
    result = profile_dataset(tmp_path)
    assert result["images"] is None
    assert result["other_files"] == 1


def test_decompression_bomb_reports_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Far over twice the limit, which makes Image.open raise instead of warn.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    make_image(tmp_path / "big.png", (50, 40), "PNG")
    images = profile_dataset(tmp_path)["images"]
    assert images["count"] == 1
    assert images["width"]["max"] == 50
    assert images["height"]["max"] == 40
    assert Image.MAX_IMAGE_PIXELS == 100  # the limit is put back


def test_hidden_files_and_symlinks_skipped(tmp_path: Path) -> None:
    write(tmp_path / ".hidden.csv", "a\n1\n")
    write(tmp_path / ".git" / "x.csv", "a\n1\n")
    write(tmp_path / "data" / ".cache" / "y.png", "junk")
    write(tmp_path / "data" / "real.csv", "a\n1\n")
    outside = write(tmp_path.parent / f"{tmp_path.name}-outside.csv", "a\n1\n")
    (tmp_path / "link.csv").symlink_to(outside)
    (tmp_path / "linkdir").symlink_to(tmp_path / "data", target_is_directory=True)
    result = profile_dataset(tmp_path)
    assert result["files"] == 1
    assert [t["path"] for t in result["tables"]] == ["data/real.csv"]
    assert result["images"] is None


def test_paths_sorted_and_progress(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.csv", "a\n1\n")
    write(tmp_path / "a.csv", "a\n1\n")
    write(tmp_path / "b" / "a.jsonl", '{"a": 1}\n')
    write(tmp_path / "notes.txt", "x")
    calls: list[tuple[int, int, str]] = []
    result = profile_dataset(tmp_path, progress=lambda d, t, p: calls.append((d, t, p)))
    assert [t["path"] for t in result["tables"]] == ["a.csv", "b/a.jsonl", "b/z.csv"]
    assert calls == [
        (1, 4, "a.csv"),
        (2, 4, "b/a.jsonl"),
        (3, 4, "b/z.csv"),
        (4, 4, "notes.txt"),
    ]


def test_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed):
        profile_dataset(tmp_path / "missing")
    with pytest.raises(ValidationFailed):
        profile_dataset(write(tmp_path / "file.csv", "a\n1\n"))


def test_distinct_gives_up_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_profile, "DISTINCT_LIMIT", 3)
    write(tmp_path / "a.csv", "few,many\n1,1\n1,2\n2,3\n2,4\n")
    cols = columns(table(profile_dataset(tmp_path), "a.csv"))
    assert cols["few"]["distinct"] == 2
    assert cols["many"]["distinct"] is None


def test_result_is_strict_json(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", CSV_TEXT)
    write(tmp_path / "n.jsonl", '{"x": NaN, "label": 1.0}\n{"x": 1.5, "label": 2}\n')
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "header_only.csv", "a,b\n")
    write(tmp_path / "bad.png", "junk")
    pq.write_table(pa.table({"f": [float("nan"), None]}), tmp_path / "p.parquet")
    result = profile_dataset(tmp_path)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert result["images"]["width"] == {"min": None, "max": None, "mean": None}
    assert [e["path"] for e in result["errors"]] == ["empty.csv"]
    assert table(result, "header_only.csv")["rows"] == 0
    assert table(result, "n.jsonl")["label"]["distribution"] == {"1": 1, "2": 1}
