"""Which column keys a text prediction: a column named ``id`` when the table has one and the
user said nothing, the column the user named, or FILE:ROW when asked for (``id_column=""``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clowder_ml.ml import textdata
from clowder_ml.tasks.text_classification import PredictParams, id_column_for


def _tables(root: Path) -> dict[str, Path]:
    (root / "a.csv").write_text("id,text\nr1,good\nr2,bad\n")
    (root / "b.tsv").write_text("text\tlabel\ngood\tpos\n")
    (root / "c.jsonl").write_text('\n{"text": "good", "id": 7}\n{"text": "bad", "id": 8}\n')
    pq.write_table(pa.table({"uid": ["u1"], "text": ["fine"]}), root / "d.parquet")
    (root / "e.csv").write_text("")
    return {p.name: p for p in root.iterdir()}


def test_columns_of_each_table_format(tmp_path: Path) -> None:
    t = _tables(tmp_path)
    assert textdata.table_columns(t["a.csv"]) == ["id", "text"]
    assert textdata.table_columns(t["b.tsv"]) == ["text", "label"]
    assert textdata.table_columns(t["c.jsonl"]) == ["text", "id"]
    assert textdata.table_columns(t["d.parquet"]) == ["uid", "text"]
    assert textdata.table_columns(t["e.csv"]) == []


def test_a_column_named_id_keys_predictions_unless_told_otherwise(tmp_path: Path) -> None:
    t = _tables(tmp_path)
    assert PredictParams(model="m").id_column is None
    assert "named `id`" in json.dumps(PredictParams.model_json_schema())
    assert id_column_for(t["a.csv"], None) == "id"
    assert id_column_for(t["c.jsonl"], None) == "id"
    assert id_column_for(t["b.tsv"], None) is None  # no id column: FILE:ROW
    assert id_column_for(t["d.parquet"], None) is None
    assert id_column_for(t["d.parquet"], "uid") == "uid"
    assert id_column_for(t["a.csv"], "") is None  # asked for FILE:ROW
    [batch] = textdata.iter_text_rows(t["a.csv"], tmp_path, "text", None,
                                      id_column_for(t["a.csv"], None))
    assert batch.ids == ["r1", "r2"]
    [batch] = textdata.iter_text_rows(t["c.jsonl"], tmp_path, "text", None,
                                      id_column_for(t["c.jsonl"], None))
    assert batch.ids == ["7", "8"]
    [batch] = textdata.iter_text_rows(t["a.csv"], tmp_path, "text", None,
                                      id_column_for(t["a.csv"], ""))
    assert batch.ids == ["a.csv:1", "a.csv:2"]
