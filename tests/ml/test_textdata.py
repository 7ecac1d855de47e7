"""textdata: finding, streaming, checking, splitting and tokenizing text tables in tmp_path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import textdata
from clowder_ml.ml.textdata import (
    TextBatch,
    TextExamples,
    TokenizedTable,
    cache_key,
    check_validation_labels,
    encode_to_arrow,
    find_tables,
    iter_text_rows,
    label_mapping,
    load_examples,
    split_examples,
)


def fake_tokenize(texts: list[str]) -> dict[str, list[list[int]]]:
    return {
        "input_ids": [[ord(c) % 100 for c in t[:8]] for t in texts],
        "attention_mask": [[1] * min(len(t), 8) for t in texts],
    }


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def rows_of(path: Path, root: Path, **kwargs: Any) -> list[TextBatch]:
    kwargs.setdefault("label_column", "label")
    return list(iter_text_rows(path, root, kwargs.pop("text_column", "text"), **kwargs))


def error(call: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        call()
    assert info.value.code == "validation_failed"
    assert info.value.hint
    return info.value


FIVE_CSV = 'text,label\nalpha,pos\nbeta,neg\n"gam,ma",pos\ndelta,neg\neps,pos\n'


# --------------------------------------------------------------------------- find_tables


def test_find_tables_sorted_skips_hidden_and_non_tables(tmp_path: Path) -> None:
    for name in ["b.csv", "a/z.jsonl", "a/y.PARQUET", "c.tsv", "d.ndjson", "e.pq", "notes.txt"]:
        write(tmp_path / name, "x")
    write(tmp_path / ".hidden.csv", "x")
    write(tmp_path / ".git" / "x.csv", "x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_tables(tmp_path)]
    assert found == ["a/y.PARQUET", "a/z.jsonl", "b.csv", "c.tsv", "d.ndjson", "e.pq"]
    chosen = find_tables(tmp_path, ["c.tsv", "a/z.jsonl"])
    assert [p.relative_to(tmp_path).as_posix() for p in chosen] == ["a/z.jsonl", "c.tsv"]
    rest = find_tables(tmp_path, exclude=["b.csv"])
    assert "b.csv" not in [p.name for p in rest]


def test_find_tables_named_file_missing_or_not_table(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text\nx\n")
    write(tmp_path / "notes.txt", "x")
    err = error(lambda: find_tables(tmp_path, ["val.csv"]))
    assert "'val.csv'" in err.message and "train.csv" in (err.hint or "")
    err = error(lambda: find_tables(tmp_path, ["notes.txt"]))
    assert "not a table" in err.message
    error(lambda: find_tables(tmp_path, ["../outside.csv"]))
    error(lambda: find_tables(tmp_path / "nope"))


# --------------------------------------------------------------------------- reading formats


def test_csv_batches_ids_and_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d" / "train.csv", FIVE_CSV)
    batches = rows_of(path, tmp_path, batch_rows=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert batches[0].texts == ["alpha", "beta"]
    assert batches[1].texts == ["gam,ma", "delta"]
    assert batches[0].labels == ["pos", "neg"]
    assert batches[2].ids == ["d/train.csv:5"]
    assert batches[2].rows == [5]
    assert batches[0].source == "d/train.csv"


def test_tsv_jsonl_parquet_read_the_same(tmp_path: Path) -> None:
    expected = (["a b", "c", "d"], ["1", "0", "True"])
    write(tmp_path / "t.tsv", "label\ttext\textra\n1\ta b\tx\n0\tc\ty\nTrue\td\tz\n")
    write(
        tmp_path / "t.jsonl",
        jsonl([{"text": "a b", "label": 1}, {"text": "c", "label": 0}])
        + "\n"  # a blank line is not a row
        + jsonl([{"text": "d", "label": True, "other": [1]}]),
    )
    pq.write_table(
        pa.table({"text": ["a b", "c", "d"], "label": ["1", "0", "True"], "n": [1, 2, 3]}),
        tmp_path / "t.parquet",
    )
    for name in ["t.tsv", "t.jsonl", "t.parquet"]:
        batches = rows_of(tmp_path / name, tmp_path)
        texts = [t for b in batches for t in b.texts]
        labels = [label for b in batches for label in b.labels or []]
        assert (texts, labels) == expected, name
        assert [i for b in batches for i in b.ids][-1] == f"{name}:3"


def test_parquet_int_and_float_labels_become_strings(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1.0, 2.0]}), tmp_path / "f.parquet")
    pq.write_table(pa.table({"text": ["a", "b"], "label": [3, 4]}), tmp_path / "i.parquet")
    assert rows_of(tmp_path / "f.parquet", tmp_path)[0].labels == ["1", "2"]
    assert rows_of(tmp_path / "i.parquet", tmp_path)[0].labels == ["3", "4"]


def test_parquet_batches(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": list("abcde"), "label": list("xyxyx")}), tmp_path / "p.pq")
    assert [len(b) for b in rows_of(tmp_path / "p.pq", tmp_path, batch_rows=2)] == [2, 2, 1]


def test_jsonl_batches(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", jsonl([{"text": c, "label": "x"} for c in "abcde"]))
    assert [len(b) for b in rows_of(path, tmp_path, batch_rows=2)] == [2, 2, 1]


def test_id_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "id,text,label\nr1,x,a\n7,y,b\n")
    batch = rows_of(path, tmp_path, id_column="id")[0]
    assert batch.ids == ["r1", "7"]
    j = write(tmp_path / "a.jsonl", jsonl([{"id": 7, "text": "x", "label": "a"}]))
    assert rows_of(j, tmp_path, id_column="id")[0].ids == ["7"]


def test_no_labels_and_quoted_empty_text(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'text\n""\nNA\n"multi\nline"\n')
    batch = rows_of(path, tmp_path, label_column=None)[0]
    assert batch.labels is None
    assert batch.texts == ["", "NA", "multi\nline"]
    assert batch.rows == [1, 2, 3]


def test_csv_with_bom_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "\ufefftext,label\n\nx,a\n\ny,b\n".encode())
    batch = rows_of(path, tmp_path)[0]
    assert batch.texts == ["x", "y"] and batch.rows == [1, 2]


# --------------------------------------------------------------------------- errors


def test_missing_text_column_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path / "sub" / "a.csv", "Text,label\nx,a\n")
    err = error(lambda: rows_of(path, tmp_path))
    assert "sub/a.csv" in err.message
    assert "'text'" in err.message and "Text, label" in err.message
    assert "--param text_column=" in (err.hint or "")
    assert "did you mean --param text_column=Text" in (err.hint or "")


def test_missing_label_column_in_jsonl_and_parquet(tmp_path: Path) -> None:
    j = write(tmp_path / "a.jsonl", jsonl([{"text": "x", "labels": "a"}]))
    err = error(lambda: rows_of(j, tmp_path))
    assert "a.jsonl" in err.message and "text, labels" in err.message
    assert "--param label_column=labels" in (err.hint or "")
    pq.write_table(pa.table({"body": ["x"], "label": ["a"]}), tmp_path / "p.parquet")
    err = error(lambda: rows_of(tmp_path / "p.parquet", tmp_path))
    assert "p.parquet" in err.message and "body, label" in err.message
    assert "--param text_column=" in (err.hint or "")
    err = error(
        lambda: rows_of(tmp_path / "p.parquet", tmp_path, text_column="body", id_column="uid")
    )
    assert "--param id_column=" in (err.hint or "")


def test_invalid_utf8_csv_names_row_column_offset(tmp_path: Path) -> None:
    data = b"label,text\npos,fine\nneg,caf\xe9 bad\n"
    path = write(tmp_path / "latin.csv", data)
    err = error(lambda: rows_of(path, tmp_path))
    assert "latin.csv, row 2, column 'text'" in err.message
    offset = data.index(b"\xe9")
    assert f"byte offset {offset} in the file" in err.message
    assert "3 in the value" in err.message
    assert "UTF-8" in (err.hint or "")


def test_invalid_utf8_in_unused_csv_column_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", b"text,label,note\nx,a,caf\xe9\n")
    assert rows_of(path, tmp_path)[0].texts == ["x"]


def test_invalid_utf8_jsonl(tmp_path: Path) -> None:
    data = b'{"text": "ok", "label": "a"}\n{"text": "bad \xff", "label": "b"}\n'
    path = write(tmp_path / "a.jsonl", data)
    err = error(lambda: rows_of(path, tmp_path))
    assert "a.jsonl, row 2, column 'text'" in err.message
    offset = data.index(b"\xff")
    assert f"byte offset {offset}" in err.message


def test_invalid_utf8_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", b"text\tlabel\nok\ta\nok\tb\xfe\n")
    err = error(lambda: rows_of(path, tmp_path))
    assert "a.tsv, row 2, column 'label'" in err.message


@pytest.mark.parametrize(
    ("name", "data", "row"),
    [
        ("a.csv", "text,label\nx,a\ny,\n", 2),
        ("a.tsv", "text\tlabel\nx\ta\ny\t  \n", 2),
        ("a.jsonl", jsonl([{"text": "x", "label": None}]), 1),
        ("b.jsonl", jsonl([{"text": "x", "label": "a"}, {"text": "y"}]), 2),
    ],
)
def test_empty_label(tmp_path: Path, name: str, data: str, row: int) -> None:
    path = write(tmp_path / name, data)
    err = error(lambda: rows_of(path, tmp_path))
    assert f"missing label in {name}, row {row}, column 'label'" in err.message


def test_empty_label_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", None]}), tmp_path / "p.parquet")
    err = error(lambda: rows_of(tmp_path / "p.parquet", tmp_path))
    assert "missing label in p.parquet, row 2, column 'label'" in err.message


@pytest.mark.parametrize(
    ("name", "data", "row"),
    [
        ("a.csv", "label,text\na,x\nb,\n", 2),
        ("a.jsonl", jsonl([{"text": "x", "label": "a"}, {"text": None, "label": "b"}]), 2),
    ],
)
def test_null_text(tmp_path: Path, name: str, data: str, row: int) -> None:
    path = write(tmp_path / name, data)
    err = error(lambda: rows_of(path, tmp_path))
    assert f"missing text in {name}, row {row}, column 'text'" in err.message
    assert "drop or fill" in (err.hint or "")


def test_empty_id(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "id,text,label\n1,x,a\n,y,b\n")
    err = error(lambda: rows_of(path, tmp_path, id_column="id"))
    assert "a.csv, row 2, column 'id'" in err.message


def test_bad_json_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"text": "x", "label": "a"}\n{oops\n')
    err = error(lambda: rows_of(path, tmp_path))
    assert "a.jsonl, row 2 (line 2)" in err.message


def test_malformed_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "text,label\nx,a,extra\n")
    err = error(lambda: rows_of(path, tmp_path))
    assert "a.csv" in err.message


# --------------------------------------------------------------------------- load_examples


def test_load_examples_concatenates_files(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "text,label\nx,a\ny,b\n")
    write(tmp_path / "b.jsonl", jsonl([{"text": "z", "label": "a"}]))
    ex = load_examples(tmp_path, None, "text", "label")
    assert ex.texts == ["x", "y", "z"]
    assert ex.labels == ["a", "b", "a"]
    assert ex.ids == ["a.csv:1", "a.csv:2", "b.jsonl:1"]
    assert ex.sources == ["a.csv", "a.csv", "b.jsonl"]
    assert ex.rows == [1, 2, 1]
    only = load_examples(tmp_path, ["b.jsonl"], "text", None)
    assert only.texts == ["z"] and only.labels is None


def test_load_examples_empty_dataset(tmp_path: Path) -> None:
    err = error(lambda: load_examples(tmp_path, None, "text", "label"))
    assert "no table files" in err.message and "it is empty" in err.message
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(b"\x89PNG")
    err = error(lambda: load_examples(tmp_path, None, "text", "label"))
    assert "it holds pics/cat.png" in err.message and ".parquet" in (err.hint or "")
    (tmp_path / "pics" / "cat.png").unlink()
    write(tmp_path / "a.csv", "text,label\n")
    write(tmp_path / "b.jsonl", "\n")
    write(tmp_path / "c.csv", "")
    err = error(lambda: load_examples(tmp_path, None, "text", "label"))
    assert "dataset has no rows" in err.message
    assert "a.csv, b.jsonl, c.csv" in err.message


# --------------------------------------------------------------------------- labels


def test_label_mapping_deterministic() -> None:
    first = label_mapping(["pos", "neg", "pos", "mid"])
    assert first == {"mid": 0, "neg": 1, "pos": 2}
    assert label_mapping(iter(["mid", "pos", "neg"])) == first


def test_label_mapping_needs_two_labels() -> None:
    err = error(lambda: label_mapping(["pos", "pos"]))
    assert "a classifier needs at least 2 labels; found 1: 'pos'" in err.message
    error(lambda: label_mapping([]))


def test_validation_label_unseen(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text,label\nx,pos\ny,neg\n")
    write(tmp_path / "val" / "v.csv", "text,label\nx,pos\ny,neutral\n")
    train = load_examples(tmp_path, ["train.csv"], "text", "label")
    val = load_examples(tmp_path, ["val/v.csv"], "text", "label")
    mapping = label_mapping(train.labels or [])
    err = error(lambda: check_validation_labels(mapping, val))
    assert "'neutral'" in err.message
    assert "val/v.csv, row 2, column 'label'" in err.message
    assert "'neg', 'pos'" in err.message
    ok = load_examples(tmp_path, ["train.csv"], "text", "label")
    check_validation_labels(mapping, ok)


# --------------------------------------------------------------------------- split


def make_examples(labels: list[str]) -> TextExamples:
    n = len(labels)
    return TextExamples(
        texts=[f"t{i}" for i in range(n)],
        labels=list(labels),
        ids=[f"f:{i + 1}" for i in range(n)],
        sources=["f"] * n,
        rows=list(range(1, n + 1)),
        label_column="label",
    )


def test_split_deterministic_and_seeded() -> None:
    ex = make_examples(["a"] * 30 + ["b"] * 10)
    train1, val1 = split_examples(ex, 0.25, seed=1)
    train2, val2 = split_examples(ex, 0.25, seed=1)
    _, val3 = split_examples(ex, 0.25, seed=2)
    assert val1.ids == val2.ids and train1.ids == train2.ids
    assert val1.ids != val3.ids
    assert sorted(train1.ids + val1.ids) == sorted(ex.ids)
    assert not set(train1.ids) & set(val1.ids)
    assert train1.rows == sorted(train1.rows)  # original order kept


def test_split_stratified() -> None:
    ex = make_examples(["a"] * 30 + ["b"] * 10 + ["c"])
    train, val = split_examples(ex, 0.2, seed=0)
    assert Counter(val.labels) == {"a": 6, "b": 2}
    assert Counter(train.labels) == {"a": 24, "b": 8, "c": 1}


def test_split_small_still_has_validation() -> None:
    ex = make_examples(["a", "a", "b", "b"])
    train, val = split_examples(ex, 0.1, seed=0)
    assert len(val) == 1 and set(train.labels or []) == {"a", "b"}
    no_labels = TextExamples(
        texts=["x", "y", "z"], ids=["1", "2", "3"], sources=["f"] * 3, rows=[1, 2, 3]
    )
    _, val = split_examples(no_labels, 0.1, seed=0)
    assert len(val) == 1


def test_split_errors() -> None:
    ex = make_examples(["a", "b"])
    for bad in [0.0, -0.1, 0.95, 1.0, float("nan")]:
        err = error(lambda bad=bad: split_examples(ex, bad, seed=0))
        assert "validation_split" in err.message
    err = error(lambda: split_examples(ex, 0.5, seed=0))
    assert "too few examples" in err.message


# --------------------------------------------------------------------------- tokenized Arrow


def test_encode_to_arrow_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", FIVE_CSV)
    mapping = {"neg": 0, "pos": 1}
    out = tmp_path / "cache" / "enc.arrow"
    result = encode_to_arrow(
        iter_text_rows(path, tmp_path, "text", "label", batch_rows=2), fake_tokenize, mapping, out
    )
    assert result == out and out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["enc.arrow"]  # no temp left
    with TokenizedTable(out) as table:
        assert len(table) == 5
        assert table.has_labels
        assert table[0] == {
            "input_ids": [ord(c) % 100 for c in "alpha"],
            "attention_mask": [1] * 5,
            "label": 1,
            "id": "train.csv:1",
            "length": 5,
        }
        assert table[-1]["id"] == "train.csv:5"
        assert table.lengths() == [5, 4, 6, 5, 3]
        picked = table.batch([3, 1])
        assert picked["label"] == [0, 0]
        assert picked["id"] == ["train.csv:4", "train.csv:2"]
        assert picked["input_ids"][1] == [ord(c) % 100 for c in "beta"]
        with pytest.raises(IndexError):
            table[5]
    schema = pa.ipc.open_file(pa.memory_map(str(out))).schema
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    assert schema.field("attention_mask").type == pa.list_(pa.int8())
    assert schema.field("label").type == pa.int64()
    assert schema.field("length").type == pa.int32()


def test_encode_without_labels_and_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "text\nabcdefghijk\n")
    out = encode_to_arrow(
        iter_text_rows(path, tmp_path, "text", None), fake_tokenize, None, tmp_path / "p.arrow"
    )
    with TokenizedTable(out) as table:
        assert not table.has_labels and "label" not in table.column_names
        assert table.lengths() == [8]
    empty = encode_to_arrow(iter([]), fake_tokenize, None, tmp_path / "e.arrow")
    with TokenizedTable(empty) as table:
        assert len(table) == 0


def test_encode_unknown_label(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "text,label\nx,pos\ny,other\n")
    out = tmp_path / "x.arrow"
    err = error(
        lambda: encode_to_arrow(
            iter_text_rows(path, tmp_path, "text", "label"), fake_tokenize, {"pos": 0}, out
        )
    )
    assert "'other'" in err.message and "a.csv, row 2" in err.message
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


def test_cache_key() -> None:
    assert cache_key("a", "b") == cache_key("a", "b")
    assert cache_key("a", "b") != cache_key("ab")
    assert cache_key("a\0b") == cache_key("a", "b")  # the documented join
    assert len(cache_key("x")) == 64


def test_csv_rebatches_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textdata, "CSV_BLOCK_SIZE", 64)
    body = "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(50))
    path = write(tmp_path / "big.csv", "text,label\n" + body)
    batches = rows_of(path, tmp_path, batch_rows=7)
    assert [len(b) for b in batches] == [7] * 7 + [1]
    assert batches[-1].texts == ["text number 49"] and batches[-1].rows == [50]
