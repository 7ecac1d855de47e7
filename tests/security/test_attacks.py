"""The attack suite (issue #3): each program under ``attacks/`` tries to break out of the gVisor
sandbox in one way. For every one:

1. contained: it prints ``ESCAPED`` only when an attempt succeeds, and none of the host's
   secrets (planted environment variable, database, blob, host file, SSH key, another
   sandbox's work folder) appears in what it wrote;
2. the right verdict (the ``verdict:`` line of its docstring);
3. the host unchanged: the same snapshot before and after (no runsc state or process left, no
   mount, no cgroup, no bundle, no file dropped on the host, watched files identical, the
   host listeners heard nothing, the sentinel process alive);
4. the next sandbox runs fine.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from security_helpers import Host, compare, snapshot

from clowder_ml.sandbox import Limits, SandboxResult, Verdict

ATTACKS_DIR = Path(__file__).parent / "attacks"
BASE_LIMITS = Limits(wall_s=10, cpu_s=10, memory_bytes=256 << 20, processes=32,
                     output_bytes=1 << 20, disk_bytes=16 << 20)
IDLE_KEYS = ("runsc list", "runsc state", "sandbox temp root", "processes of our runs",
             "mounts under our roots", "run cgroups")


@dataclass(frozen=True)
class Attack:
    name: str
    path: Path
    verdict: Verdict
    limits: Limits
    collect: list[str] | None = field(default=None)
    needs_collect: bool = False


def _load(path: Path) -> Attack:
    text = path.read_text()
    doc = text.split('"""')[1]
    verdict = re.search(r"^verdict: (\w+)$", doc, re.M)
    assert verdict, f"{path.name}: no 'verdict:' line in its docstring"
    limits = BASE_LIMITS
    found = re.search(r"^limits: (.+)$", doc, re.M)
    if found:
        changes: dict[str, Any] = {}
        for item in found.group(1).split():
            key, value = item.split("=")
            changes[key] = float(value) if key.endswith("_s") else (
                value if not value.isdigit() else int(value))
        limits = limits.with_(**changes)
    coll = re.search(r"^collect: (.*)$", doc, re.M)
    names = coll.group(1).split() if coll else None
    return Attack(path.stem, path, Verdict(verdict.group(1)), limits,
                  collect=None if names == ["*"] else names, needs_collect=coll is not None)


ATTACKS = [_load(p) for p in sorted(ATTACKS_DIR.glob("[0-9][0-9]_*.py"))]

OK_PROGRAM = "print('ok')\n"
VICTIM = """
import os, time
with open('/work/victim-canary.txt', 'w') as f:
    f.write(os.environ['VICTIM_SECRET'])
deadline = time.monotonic() + 50
while not os.path.exists('/data/stop') and time.monotonic() < deadline:
    time.sleep(0.05)
print('victim done' if os.path.exists('/data/stop') else 'victim gave up')
"""


# What collection must copy (at least) and refuse (path -> part of the reason).
EXPECTED_COLLECT: dict[str, tuple[list[str], dict[str, str]]] = {
    "27_output_symlinks": (["results/real.txt"], {
        "passwd": "symlink", "rootdir": "symlink", "up": "symlink", "canary": "symlink",
        "results/etc": "symlink", "results/model.bin": "symlink"}),
    "28_traversal_names": (["ok.txt", "..hidden"], {
        "../escape": "leave the work folder", "/etc/passwd": "not a plain relative path",
        "a/../../escape": "leave the work folder", "./x": "leave the work folder",
        "a//b": "leave the work folder", "a\\b": "not a plain relative path",
        "link/passwd": "symlinks are not followed", "deep/" + "/".join(["d"] * 64):
        "deeper than 64 folders"}),
    "42_collect_amplification": ([], {"sparse.bin": "over the size cap"}),
}


def _host_unchanged(host: Host, before: dict[str, Any]) -> None:
    # Cleanup is synchronous, so the first look should be clean; a few retries only absorb
    # unrelated processes on a shared machine coming and going.
    problems: list[str] = []
    for _ in range(4):
        problems = compare(before, snapshot(host))
        if not problems:
            return
        time.sleep(0.5)
    pytest.fail("the host changed: " + "; ".join(problems))


def _run(host: Host, attack: Attack, tmp_path: Path, env: dict[str, str]) -> SandboxResult:
    kwargs: dict[str, Any] = {}
    if attack.needs_collect:
        kwargs["collect_into"] = tmp_path / "collected" / "out"
        kwargs["collect_names"] = attack.collect
    return host.sb.run_python(attack.path, input_dir=host.input_dir, env=env,
                              limits=attack.limits, **kwargs)


def _run_with_victim(host: Host, attack: Attack, tmp_path: Path,
                     env: dict[str, str]) -> SandboxResult:
    """Start a victim sandbox holding a secret in its /work, run the attack while it is alive,
    then check the victim was not disturbed."""
    secret = host.secrets["victim"] = f"victim-secret-{host.marker}"
    victim_file = tmp_path / "victim.py"
    victim_file.write_text(VICTIM)
    victim_input = tmp_path / "victim-input"
    victim_input.mkdir()
    out: dict[str, SandboxResult] = {}

    def victim() -> None:
        out["victim"] = host.sb.run_python(
            victim_file, input_dir=victim_input, env={"VICTIM_SECRET": secret},
            limits=BASE_LIMITS.with_(wall_s=60))

    thread = threading.Thread(target=victim)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        found: list[Path] = []
        while not found and time.monotonic() < deadline:
            found = list(host.sb.tmp_root.glob("cml-*/work/victim-canary.txt"))
            time.sleep(0.05)
        assert found, "the victim sandbox never wrote its canary"
        result = host.sb.run_python(attack.path, input_dir=host.input_dir,
                                    env={**env, "VICTIM_HOST_WORK": str(found[0].parent)},
                                    limits=attack.limits)
        assert thread.is_alive(), "the victim ended before the attack did; not a fair test"
    finally:
        (victim_input / "stop").write_text("")
        thread.join()
    assert out["victim"].verdict is Verdict.OK, out["victim"]
    assert out["victim"].stdout == b"victim done\n"
    return result


def _check_collected(host: Host, name: str, tmp_path: Path, result: SandboxResult) -> None:
    """Collection copied only regular files into its folder, refused every link and escaping
    name, and wrote nothing next to it."""
    collected = tmp_path / "collected"
    assert sorted(p.name for p in collected.iterdir()) == ["out"]
    out = collected / "out"
    passwd = Path("/etc/passwd").read_bytes()
    for p in out.rglob("*"):
        assert not p.is_symlink(), f"a symlink was collected: {p}"
        assert p.is_file() or p.is_dir(), f"a special file was collected: {p}"
        assert out in p.resolve().parents
        if p.is_file():
            data = p.read_bytes()
            assert data != passwd and b"root:x:0:0" not in data, f"host file copied: {p}"
            for value in host.secrets.values():
                assert value.encode() not in data
    assert result.refused, "nothing was refused; the attack's links were not seen"
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total <= result.limits.disk_bytes, (
        f"collection wrote {total} bytes to the host, more than the disk limit")
    files, refused = EXPECTED_COLLECT[name]
    assert set(files) <= set(result.files), result.files
    for path, why in refused.items():
        assert why in result.refused.get(path, ""), (path, result.refused)
    for name in result.files:
        assert not name.startswith("/") and ".." not in name.split("/")


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(host: Host, attack: Attack, tmp_path: Path) -> None:
    before = snapshot(host)
    for key in IDLE_KEYS:
        assert before[key] == [], f"not idle before the attack: {key} = {before[key]}"
    env = dict(host.env)
    if attack.name.endswith("other_sandbox_work"):
        result = _run_with_victim(host, attack, tmp_path, env)
    else:
        result = _run(host, attack, tmp_path, env)
    text = (result.stdout + b"\n" + result.stderr).decode("utf-8", "replace")
    where = f"{attack.name}: {result.verdict} ({result.detail})\n{text[-3000:]}"
    print(where)  # shown with -s, or when the test fails

    # 1. contained
    assert "ESCAPED" not in text, where
    for what, value in host.secrets.items():
        assert value not in text, f"the {what} secret leaked into the output: {where}"
    # 2. the right verdict
    assert result.verdict is attack.verdict, where
    if attack.verdict is Verdict.OK:
        assert "COMPLETE" in text, f"the attack did not run to its end: {where}"
    if attack.needs_collect:
        _check_collected(host, attack.name, tmp_path, result)
    if attack.name.endswith("daemonize"):
        time.sleep(4)  # past the daemon's delay: a survivor would act now
    # 3. the host unchanged
    _host_unchanged(host, before)
    # 4. the next sandbox runs fine
    prog = tmp_path / "ok.py"
    prog.write_text(OK_PROGRAM)
    nxt = host.sb.run_python(prog, limits=BASE_LIMITS)
    assert nxt.verdict is Verdict.OK and nxt.stdout == b"ok\n", nxt
    _host_unchanged(host, before)
