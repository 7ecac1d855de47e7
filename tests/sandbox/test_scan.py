"""Tests for the advisory code scan (Bandit + AST policy) of user-supplied Python.

The scan is advice and defense in depth; the gVisor sandbox is the boundary. These tests pin
what the scan reports (rule ids, severities, positions, messages) and that ordinary
data-science code is left alone. That code which slips past the scan is still contained is
the sandbox's tests' job, not this file's.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.scan import (
    DEFAULT_BANDIT_SKIPS,
    MONACO_SEVERITY,
    RULES,
    Finding,
    ScanBlocked,
    ScanOptions,
    ScanReport,
    scan,
    severity_at_least,
)


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def only(report: ScanReport, rule_id: str) -> list[Finding]:
    return [f for f in report.findings if f.rule_id == rule_id]


def one(report: ScanReport, rule_id: str) -> Finding:
    found = only(report, rule_id)
    assert len(found) == 1, report.findings
    return found[0]


POLICY_ONLY = ScanOptions(bandit=False)


# ---------------------------------------------------------------------------------------------
# the example and the boundary


def test_getattr_builtins_exec_is_flagged_but_the_sandbox_is_the_boundary() -> None:
    """``getattr(__builtins__, "ex" + "ec")`` is flagged (CML005 and CML003) and blocks.

    The scan is advice and defense in depth, never the security boundary: it judges only what
    it can read in the source. Code that slips past it (names fetched at run time, data that
    turns into code, tricks nobody listed) is contained by the gVisor sandbox — no network,
    read-only inputs, a private output folder, resource limits — whose own tests show that
    this very snippet, run, cannot get out.
    """
    report = scan('getattr(__builtins__, "ex" + "ec")("import os")\n')
    cml005 = one(report, "CML005")
    assert cml005.severity == "high"
    assert "'exec'" in cml005.message and "assembled" in cml005.message
    cml003 = one(report, "CML003")
    assert (cml003.line, cml003.column, cml003.end_column) == (1, 8, 20)
    assert cml003.severity == "high"
    assert report.blocked


# ---------------------------------------------------------------------------------------------
# one example per rule (and the registry is complete)

RULE_EXAMPLES: dict[str, str] = {
    "CML000": "def f(:\n",
    "CML001": "import subprocess\n",
    "CML002": "eval('1 + 1')\n",
    "CML003": "().__class__.__base__.__subclasses__()\n",
    "CML004": "open('/etc/passwd')\n",
    "CML005": "getattr(obj, '__globals__')\n",
    "CML006": "import os\nos.system('ls')\n",
    "CML007": "globals()['x'] = 1\n",
}


def test_every_rule_has_an_example() -> None:
    assert set(RULE_EXAMPLES) == set(RULES)


@pytest.mark.parametrize("rule_id", sorted(RULE_EXAMPLES))
def test_rule_examples_fire(rule_id: str) -> None:
    report = scan(RULE_EXAMPLES[rule_id], POLICY_ONLY)
    found = only(report, rule_id)
    assert found, report.findings
    for f in found:
        assert f.source == "policy"
        assert f.message and f.hint
        assert f.severity in ("low", "medium", "high")
        assert f.confidence in ("low", "medium", "high")


# ---------------------------------------------------------------------------------------------
# CML000 cannot parse


def test_syntax_error_is_one_finding_with_position() -> None:
    report = scan("x = 1\ndef f(:\n    pass\n")
    assert len(report.findings) == 1
    f = report.findings[0]
    assert (f.rule_id, f.severity, f.line, f.column) == ("CML000", "high", 2, 6)
    assert f.end_column > f.column
    assert "syntax error" in f.message
    assert report.blocked


def test_syntax_error_column_counts_characters_not_bytes() -> None:
    f = scan("s = 'é'; x = (1 +\n").findings[0]
    assert (f.rule_id, f.line, f.column) == ("CML000", 1, 13)  # the '(' never closed


def test_indentation_error() -> None:
    f = one(scan("def f():\nreturn 1\n"), "CML000")
    assert f.line == 2 and "indentation error" in f.message


def test_nul_character_is_located() -> None:
    f = one(scan("x = 1\ny = 'ab\0'\n"), "CML000")
    assert (f.line, f.column) == (2, 7)


@pytest.mark.parametrize("code", [
    "x = " + "-" * 100_000 + "1",
    "(" * 300 + ")" * 300,
    "a" + ".b" * 50_000,
], ids=["unary", "parentheses", "attributes"])
def test_absurd_nesting_is_a_finding_not_an_exception(code: str) -> None:
    assert rules(scan(code)) == {"CML000"}


def test_too_large_code_is_not_scanned() -> None:
    report = scan("x = 1\n" * 1000, ScanOptions(max_bytes=100))
    f = one(report, "CML000")
    assert "too large" in f.message and report.blocked


@pytest.mark.parametrize("code", ["", "\n\n", "# only a comment\n", "pass", "\ufeffx = 1\n"])
def test_trivial_code_has_no_findings(code: str) -> None:
    report = scan(code)
    assert report.findings == () and not report.blocked


# ---------------------------------------------------------------------------------------------
# CML001 imports


def test_forbidden_import_names_the_module() -> None:
    report = scan("import json, subprocess\n", POLICY_ONLY)
    f = one(report, "CML001")
    assert f.severity == "high" and "`subprocess`" in f.message
    assert (f.line, f.column, f.end_column) == (1, 13, 23)  # the alias, not the statement


@pytest.mark.parametrize(("code", "severity"), [
    ("import socket", "high"),
    ("import ctypes", "high"),
    ("import importlib", "high"),
    ("from importlib import import_module", "high"),
    ("import builtins", "high"),
    ("from os import system", "high"),
    ("from os import *", "high"),
    ("from os import environ", "medium"),
    ("import os", "medium"),
    ("import pickle", "medium"),
    ("import requests", "medium"),
    ("from urllib.request import urlopen", "medium"),
    ("import shutil", "low"),
])
def test_import_severities(code: str, severity: str) -> None:
    assert one(scan(code + "\n", POLICY_ONLY), "CML001").severity == severity


@pytest.mark.parametrize("code", [
    "import os.path", "from os import path", "from os.path import join",
    "from urllib.parse import urlparse", "from . import helpers", "import sys",
])
def test_harmless_imports_pass(code: str) -> None:
    assert "CML001" not in rules(scan(code + "\n", POLICY_ONLY))


def test_import_finding_replaces_bandits_duplicate() -> None:
    report = scan("import subprocess\n")
    assert rules(report) == {"CML001"}  # Bandit's B404 on the same line is dropped


# ---------------------------------------------------------------------------------------------
# CML002 exec / eval / compile / __import__


@pytest.mark.parametrize("name", ["exec", "eval", "compile", "__import__"])
def test_code_builtins_are_high(name: str) -> None:
    f = one(scan(f"{name}('x')\n", POLICY_ONLY), "CML002")
    assert f.severity == "high" and f"`{name}()`" in f.message
    assert (f.line, f.column, f.end_column) == (1, 0, len(name))


def test_aliasing_a_code_builtin_is_flagged() -> None:
    assert "CML002" in rules(scan("run = eval\nrun('1')\n", POLICY_ONLY))


def test_builtins_attribute_exec_is_flagged() -> None:
    report = scan("import builtins\nbuiltins.exec('x')\n", POLICY_ONLY)
    assert one(report, "CML002").line == 2


def test_method_calls_named_like_builtins_are_not_flagged() -> None:
    code = src("""
        import re
        import torch
        pattern = re.compile(r"\\s+")
        model = torch.compile(model)
        model.eval()
        """)
    assert "CML002" not in rules(scan(code))


def test_users_own_eval_function_is_not_flagged_by_either_engine() -> None:
    code = src("""
        def eval(model, loader):
            return sum(model(x) for x in loader)

        def main(model, loader):
            print(eval(model, loader))

        score = eval(None, [])
        """)
    report = scan(code)
    assert "CML002" not in rules(report) and "B307" not in rules(report)


def test_parameter_named_eval_is_the_users() -> None:
    code = "def train(model, eval=False):\n    if eval:\n        model.eval()\n"
    assert "CML002" not in rules(scan(code, POLICY_ONLY))


def test_imported_compile_is_not_the_builtin() -> None:
    assert "CML002" not in rules(scan("from re import compile\ncompile('a+')\n", POLICY_ONLY))


def test_shadowing_tricks_do_not_hide_the_builtin() -> None:
    conditional = "if False:\n    def eval(s): pass\neval('1')\n"
    deleted = "def eval(s): pass\ndel eval\neval('1')\n"
    before = "eval('1')\ndef eval(s): pass\n"
    maybe_imported = "if False:\n    from re import compile\ncompile('1', '', 'exec')\n"
    from_builtins = "from builtins import eval\neval('1')\n"
    for code in (conditional, deleted, before, maybe_imported, from_builtins):
        assert "CML002" in rules(scan(code, POLICY_ONLY)), code


# ---------------------------------------------------------------------------------------------
# CML003 interpreter internals


def test_dunder_chain_is_one_high_finding_naming_the_chain() -> None:
    report = scan("x = ().__class__.__base__.__subclasses__()[0]\n", POLICY_ONLY)
    f = one(report, "CML003")
    assert f.severity == "high"
    assert "`__class__.__base__.__subclasses__`" in f.message
    assert (f.line, f.column) == (1, 4)


@pytest.mark.parametrize("code", [
    "f.__globals__['os']",
    "fn.__code__",
    "x.__builtins__",
    "type(x).__mro__",
    "__builtins__",
    "frame.f_back.f_globals",
    "gen.gi_frame",
    "obj.__class__.__dict__",  # two unusual dunders in one chain
])
def test_internals_are_high(code: str) -> None:
    found = only(scan(code + "\n", POLICY_ONLY), "CML003")
    assert found and max(f.severity for f in found) == "high", found


def test_single_unusual_dunder_is_medium() -> None:
    assert one(scan("self.__dict__.update(kw)\n", POLICY_ONLY), "CML003").severity == "medium"


@pytest.mark.parametrize("code", [
    "name = self.__class__.__name__",
    "name = type(self).__name__",
    "super().__init__()",
    "print(torch.__version__, __name__, __file__, x.__len__())",
    "if __name__ == '__main__':\n    main()",
])
def test_ordinary_dunders_pass(code: str) -> None:
    assert "CML003" not in rules(scan(code + "\n", POLICY_ONLY))


def test_string_naming_an_internal_is_medium() -> None:
    f = one(scan("key = '__globals__'\n", POLICY_ONLY), "CML003")
    assert f.severity == "medium"


# ---------------------------------------------------------------------------------------------
# CML004 paths


@pytest.mark.parametrize(("code", "resolved"), [
    ("open('/etc/passwd')", "/etc/passwd"),
    ("open('../secret.txt')", "/secret.txt"),
    ("open('/work/../etc/shadow')", "/etc/shadow"),
    ("open(file='/root/.ssh/id_rsa')", "/root/.ssh/id_rsa"),
    ("import pandas as pd\npd.read_csv('/home/me/x.csv')", "/home/me/x.csv"),
    ("from pathlib import Path\nPath('/proc/self/environ').read_text()", "/proc/self/environ"),
    ("from pathlib import Path\np = Path('/data') / '..' / 'etc'", "/etc"),
    ("import os\nos.listdir(os.path.join('/', 'etc'))", "/etc"),
    ("import torch\ntorch.save(model, '/tmp/model.pt')", "/tmp/model.pt"),
])
def test_paths_outside_the_run_folders_are_high(code: str, resolved: str) -> None:
    f = one(scan(code + "\n", POLICY_ONLY), "CML004")
    assert f.severity == "high" and f"{resolved!r}" in f.message, f.message
    assert "/work" in f.hint and "/data" in f.hint


def test_path_finding_points_at_the_path() -> None:
    f = one(scan("with open('/etc/passwd') as fh:\n    pass\n", POLICY_ONLY), "CML004")
    assert (f.line, f.column, f.end_column) == (1, 10, 23)


def test_literal_prefix_of_a_computed_path_is_judged_and_says_so() -> None:
    f = one(scan("open(f'/etc/{name}')\n", POLICY_ONLY), "CML004")
    assert f.confidence == "medium" and "Only the literal start" in f.message
    f = one(scan("open('/srv/' + name)\n", POLICY_ONLY), "CML004")
    assert "'/srv/'" in f.message


def test_dotdot_before_a_computed_part_is_medium() -> None:
    f = one(scan("open('/work/../' + name)\n", POLICY_ONLY), "CML004")
    assert f.severity == "medium" and "'..'" in f.message


def test_writing_into_read_only_inputs_is_medium() -> None:
    f = one(scan("open('/data/train.csv', 'w')\n", POLICY_ONLY), "CML004")
    assert f.severity == "medium" and "read-only" in f.message
    f = one(scan("df.to_csv('/data/clean.csv')\n", POLICY_ONLY), "CML004")
    assert f.severity == "medium"


@pytest.mark.parametrize("code", [
    "open('/work/out.csv', 'w')",
    "open('/data/train.csv')",
    "open('data/train.csv')",
    "open('sub/../x.csv')",
    "open(os.path.join(out_dir, name), 'w')",
    "open(f'/work/{name}.json', 'w')",
    "open('/wo' + rest)",
    "pd.read_csv('https://example.org/x.csv')",
    "AutoModel.from_pretrained('bert-base-uncased')",
    "np.save('/work/emb.npy', emb)",
    "Path('/work') / 'out' / 'model.safetensors'",
])
def test_paths_inside_the_run_folders_pass(code: str) -> None:
    assert "CML004" not in rules(scan(code + "\n", POLICY_ONLY))


def test_allowed_roots_are_configurable() -> None:
    opts = ScanOptions(bandit=False, allowed_roots=("/work", "/data", "/models"))
    assert "CML004" not in rules(scan("open('/models/base/config.json')\n", opts))
    assert "CML004" in rules(scan("open('/models/base/config.json')\n", POLICY_ONLY))


def test_roots_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        ScanOptions(allowed_roots=("work",))


# ---------------------------------------------------------------------------------------------
# CML005 getattr & co


@pytest.mark.parametrize("code", [
    "getattr(obj, 'ex' + 'ec')",
    "getattr(obj, 'cexe'[::-1])",
    "getattr(obj, ''.join(['ev', 'al']))",
    "getattr(obj, chr(101) + 'val')",
    "getattr(os, f'{\"sys\"}tem')",
    "getattr(obj, '__subclasses__')",
    "setattr(fn, '__code__', other)",
])
def test_hidden_names_are_high(code: str) -> None:
    f = one(scan(code + "\n", POLICY_ONLY), "CML005")
    assert f.severity == "high", f


def test_name_assembled_from_harmless_pieces_is_medium() -> None:
    f = one(scan("getattr(obj, 'lo' + 'ss')\n", POLICY_ONLY), "CML005")
    assert f.severity == "medium" and "'loss'" in f.message and "obj.loss" in f.hint


@pytest.mark.parametrize("module", ["builtins", "os", "subprocess"])
def test_computed_names_on_powerful_modules_are_high(module: str) -> None:
    report = scan(f"import {module}\ngetattr({module}, name)\n", POLICY_ONLY)
    assert one(report, "CML005").severity == "high"


def test_computed_names_elsewhere_are_advice() -> None:
    assert one(scan("getattr(torch.optim, cfg.optimizer)\n", POLICY_ONLY),
               "CML005").severity == "low"
    assert one(scan("setattr(cfg, key, value)\n", POLICY_ONLY), "CML005").severity == "medium"


@pytest.mark.parametrize("code", [
    "getattr(obj, 'weight')",
    "getattr(fn, '__name__', 'fn')",
    "hasattr(model, name)",
    "hasattr(cfg, 'lr')",
])
def test_plain_attribute_lookups_pass(code: str) -> None:
    assert "CML005" not in rules(scan(code + "\n", POLICY_ONLY))


def test_huge_string_products_are_not_built() -> None:
    # 'a' * 10**9 must not be evaluated by the scan.
    report = scan("getattr(o, 'a' * 1000000000)\ngetattr(o, 'ab' * 1000)\n", POLICY_ONLY)
    assert all(f.severity == "low" for f in only(report, "CML005"))


# ---------------------------------------------------------------------------------------------
# CML006 / CML007


@pytest.mark.parametrize("code", [
    "import os\nos.system('ls')",
    "import os as o\no.execv('/bin/sh', [])",
    "import os\nos.fork()",
    "from os import popen\npopen('ls')",
])
def test_process_calls_are_high(code: str) -> None:
    found = only(scan(code + "\n", POLICY_ONLY), "CML006")
    assert found and all(f.severity == "high" for f in found)
    assert found[-1].line == 2


@pytest.mark.parametrize("code", [
    "import sys\nsys._getframe(1)",
    "import sys\nsys.modules['os'] = None",
    "import gc\ngc.get_referrers(x)",
    "import inspect\ninspect.currentframe()",
])
def test_introspection_calls_are_medium(code: str) -> None:
    assert one(scan(code + "\n", POLICY_ONLY), "CML006").severity == "medium"


def test_os_system_reported_once_with_a_researchers_message() -> None:
    report = scan("import os\nos.system('ls')\n")
    on_line_2 = [f for f in report.findings if f.line == 2]
    assert [f.rule_id for f in on_line_2] == ["CML006"]  # Bandit's B605/B607 are dropped
    assert "no shell" in on_line_2[0].message


@pytest.mark.parametrize(("code", "severity"), [
    ("globals()", "medium"), ("locals()", "low"), ("vars()", "low"), ("breakpoint()", "medium"),
])
def test_namespace_builtins(code: str, severity: str) -> None:
    assert one(scan(code + "\n", POLICY_ONLY), "CML007").severity == severity


def test_vars_with_an_argument_passes() -> None:
    assert "CML007" not in rules(scan("cfg = vars(args)\n", POLICY_ONLY))


# ---------------------------------------------------------------------------------------------
# Bandit


def test_bandit_finding_keeps_its_id_with_a_researchers_message() -> None:
    report = scan("import subprocess\nsubprocess.call('ls -l', shell=True)\n")
    f = one(report, "B602")
    assert f.source == "bandit" and f.severity == "high"
    assert f.message.startswith("Running shell commands is not allowed in training code")
    assert "Remove the subprocess call" in f.hint
    assert (f.line, f.column) == (2, 0)
    assert "B607" not in rules(report)  # the partial-path finding on the same call is folded in


@pytest.mark.parametrize(("code", "rule_id", "phrase"), [
    ("import yaml\nyaml.load(text)", "B506", "safe_load"),
    ("import pickle\npickle.loads(blob)", "B301", "safetensors"),
    ("import torch\ntorch.load('/work/m.pt')", "B614", "weights_only=True"),
    ("try:\n    x()\nexcept Exception:\n    pass", "B110", "specific exception"),
])
def test_bandit_findings_come_with_hints(code: str, rule_id: str, phrase: str) -> None:
    f = one(scan(code + "\n"), rule_id)
    assert phrase in f.hint and f.source == "bandit"


def test_bandit_positions_span_the_node() -> None:
    f = one(scan("import yaml\ncfg = yaml.load(text)\n"), "B506")
    assert (f.line, f.column, f.end_line, f.end_column) == (2, 6, 2, 21)


def test_nosec_comments_cannot_silence_the_scan() -> None:
    report = scan("import yaml\nyaml.load(text)  # nosec\n")
    assert "B506" in rules(report)


def test_eval_is_reported_once() -> None:
    report = scan("eval('1')\n")
    assert [f.rule_id for f in report.findings] == ["CML002"]  # not also Bandit's B307


def test_bandit_skips_are_configurable() -> None:
    code = "assert x > 0\n"
    assert "B101" in DEFAULT_BANDIT_SKIPS and "B101" not in rules(scan(code))
    assert "B101" in rules(scan(code, ScanOptions(bandit_skips=frozenset())))


def test_weak_hash_for_deduplication_does_not_block() -> None:
    report = scan("import hashlib\nkey = hashlib.md5(text.encode()).hexdigest()\n")
    assert one(report, "B324").severity == "low" and not report.blocked


def test_bandit_without_its_in_memory_entry_point_uses_a_private_temp_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import clowder_ml.sandbox.scan as scan_module

    monkeypatch.setattr(scan_module, "_BANDIT_IN_MEMORY", False)
    monkeypatch.chdir(tmp_path)
    report = scan("import yaml\nyaml.load(text)\n")
    assert one(report, "B506").line == 2
    assert list(tmp_path.iterdir()) == []  # nothing written where the user works


def test_bandit_failure_becomes_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from bandit.core import manager

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(manager.BanditManager, "__init__", broken)
    report = scan("eval('1')\n")
    assert rules(report) == {"CML002"}
    assert report.notes and "only the policy checks ran" in report.notes[0]


# ---------------------------------------------------------------------------------------------
# blocking


def test_high_blocks_by_default_and_medium_does_not() -> None:
    assert scan("import subprocess\n").blocked
    medium = scan("import os\n")
    assert [f.severity for f in medium.findings] == ["medium"]
    assert not medium.blocked and medium.blocking == ()


def test_block_threshold_is_configurable() -> None:
    assert scan("import os\n", ScanOptions(block_at="medium")).blocked
    assert scan("import shutil\n", ScanOptions(block_at="low")).blocked
    advisory = scan("import subprocess\n", ScanOptions(block_at=None))
    assert not advisory.blocked and advisory.findings
    report = scan("import os\nimport subprocess\n")
    assert [f.line for f in report.blocking_at("medium")] == [1, 2]
    assert [f.line for f in report.blocking_at("high")] == [2]
    assert report.blocking_at(None) == ()


def test_invalid_threshold_is_rejected() -> None:
    with pytest.raises(ValueError, match="block_at"):
        ScanOptions(block_at="critical")  # type: ignore[arg-type]


def test_raise_if_blocked() -> None:
    scan("import json\n").raise_if_blocked()
    report = scan("import json\nimport subprocess\n")
    with pytest.raises(ScanBlocked) as info:
        report.raise_if_blocked()
    err = info.value
    assert isinstance(err, ValidationFailed) and err.status == 422
    assert err.code == "validation_failed" and err.report is report
    assert "line 2" in err.message and "subprocess" in err.message
    assert err.hint and "'high'" in err.hint


def test_disabled_rules_are_dropped() -> None:
    opts = ScanOptions(disabled_rules=frozenset({"CML001"}))
    assert not scan("import subprocess\n", opts).findings


def test_severity_order() -> None:
    assert severity_at_least("high", "medium") and not severity_at_least("low", "medium")


# ---------------------------------------------------------------------------------------------
# report shape and editor markers


def test_findings_are_sorted_and_serialisable() -> None:
    code = src("""
        import subprocess
        x = eval('1'); y = exec('2')
        open('/etc/passwd')
        """)
    report = scan(code)
    positions = [(f.line, f.column) for f in report.findings]
    assert positions == sorted(positions)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["blocked"] is True and data["block_at"] == "high"
    assert data["counts"] == {"low": 0, "medium": 0, "high": 4}
    assert set(data["findings"][0]) == {
        "rule_id", "severity", "confidence", "line", "column", "end_line", "end_column",
        "message", "hint", "source",
    }


def test_monaco_markers() -> None:
    report = scan("import os\neval('1')\n")
    medium, high = report.monaco_markers()
    assert high == {
        "startLineNumber": 2, "startColumn": 1, "endLineNumber": 2, "endColumn": 5,
        "severity": MONACO_SEVERITY["high"], "code": "CML002", "source": "clowder-ml policy",
        "message": high["message"],
    }
    assert high["severity"] == 8 and medium["severity"] == 4
    assert high["message"].startswith("`eval()`") and "\n" in high["message"]
    assert MONACO_SEVERITY["low"] == 2


def test_monaco_columns_are_utf16() -> None:
    report = scan("s = '😀😀'; eval(s)\n")
    f = one(report, "CML002")
    assert (f.column, f.end_column) == (10, 14)  # characters
    marker = report.monaco_markers()[0]
    assert (marker["startColumn"], marker["endColumn"]) == (13, 17)  # UTF-16, 1-based


def test_monaco_widens_empty_ranges() -> None:
    f = Finding("B999", "low", "low", 1, 4, 1, 4, "m", "bandit")
    marker = f.to_monaco(["x = yaml"])
    assert (marker["startColumn"], marker["endColumn"]) == (5, 9)
    assert marker["source"] == "Bandit" and marker["message"] == "m"


def test_crlf_line_endings_keep_positions() -> None:
    f = one(scan("x = 1\r\ny = 2\r\neval('1')\r\n"), "CML002")
    assert (f.line, f.column) == (3, 0)


# ---------------------------------------------------------------------------------------------
# allow-list: ordinary data-science code


REALISTIC_PREPROCESSING = src('''
    """Clean reviews and build a vocabulary."""
    import collections
    import json
    import math
    import os
    import random
    import re
    from dataclasses import dataclass, field
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    DATA = Path("/data")
    OUT = Path("/work") / "out"
    SPACES = re.compile(r"\\s+")


    @dataclass
    class Config:
        lr: float = 3e-5
        labels: list[str] = field(default_factory=list)


    def clean(text: str) -> str:
        return SPACES.sub(" ", text).strip().lower()


    def preprocess(cfg: Config) -> dict[str, int]:
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        df = pd.read_csv("/data/train.csv")
        df["text"] = df["text"].map(clean)
        df = df[df["text"].str.len() > 0]
        counts = collections.Counter(w for t in df["text"] for w in t.split())
        vocab = {w: i for i, (w, _) in enumerate(counts.most_common(10_000))}
        idf = {w: math.log(len(df) / (1 + c)) for w, c in counts.items()}
        os.makedirs("/work/out", exist_ok=True)
        with open("/work/out.csv", "w") as fh:
            fh.write(f"{len(vocab)},{max(idf.values(), default=0):.3f}\\n")
        with open(OUT / "vocab.json", "w", encoding="utf-8") as fh:
            json.dump(vocab, fh)
        df.to_parquet(OUT / "clean.parquet")
        tok = AutoTokenizer.from_pretrained("bert-base-uncased")
        model = AutoModelForSequenceClassification.from_pretrained("/work/base-model")
        model.eval()
        with torch.no_grad():
            batch = tok(list(df["text"][:8]), padding=True, return_tensors="pt")
            logits = model(**batch).logits
        torch.save(model.state_dict(), "/work/out/model.pt")
        np.save("/work/out/logits.npy", logits.numpy())
        label = type(model).__name__
        print(f"{label}: {len(df)} rows, lr={cfg.lr}")
        return vocab


    class Net(torch.nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(n, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

        def __repr__(self) -> str:
            return f"{self.__class__.__name__}()"


    if __name__ == "__main__":
        preprocess(Config())
''')


def test_realistic_preprocessing_has_no_high_finding() -> None:
    report = scan(REALISTIC_PREPROCESSING)
    assert not report.blocked
    assert [f for f in report.findings if f.severity == "high"] == []
    # `import os` is the one thing worth a word (medium, advice).
    assert {(f.rule_id, f.severity) for f in report.findings} == {("CML001", "medium")}


def test_common_libraries_and_idioms_produce_nothing() -> None:
    code = src("""
        import json, math, re, collections, itertools, functools, typing, logging, csv
        import numpy as np
        import pandas as pd
        import torch
        import transformers
        from sklearn.model_selection import train_test_split
        squares = [i * i for i in range(10) if i % 2]
        table = {k: v for k, v in zip("abc", range(3))}
        message = f"{len(squares)} squares, pi={math.pi:.2f}"
        rows = list(csv.reader(open("/data/table.csv", newline="")))
        with open("/work/result.json", "w") as fh:
            json.dump({"rows": len(rows), "msg": message}, fh)
        """)
    assert scan(code).findings == ()


def test_scanning_is_fast_for_a_large_ordinary_file() -> None:
    import time

    code = "\n".join(REALISTIC_PREPROCESSING for _ in range(20))  # ~80 KB
    start = time.perf_counter()
    report = scan(code)
    assert time.perf_counter() - start < 5
    assert not report.blocked


def test_scan_does_not_write_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scan(REALISTIC_PREPROCESSING)
    assert list(tmp_path.iterdir()) == []
    assert os.getcwd() == str(tmp_path)
