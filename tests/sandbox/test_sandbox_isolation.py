"""What the program can see and do inside gVisor: mounts, user, environment, network."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox import SandboxResult, Verdict, get_sandbox
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.settings import Settings

RunPy = Callable[..., SandboxResult]

PROBE = r"""
import errno, json, os, socket
def attempt(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'written'
    except OSError as e:
        return errno.errorcode[e.errno]
status = {k: v.strip() for k, v in
          (l.split(':', 1) for l in open('/proc/self/status') if ':' in l)}
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2)
    net = 'open'
except OSError as e:
    net = type(e).__name__
print(json.dumps({
    'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(), 'cwd': os.getcwd(),
    'env': dict(os.environ), 'hostname': os.uname().nodename,
    'root': sorted(os.listdir('/')), 'root_home': sorted(os.listdir('/root')),
    'etc': sorted(os.listdir('/etc')), 'data': sorted(os.listdir('/data')),
    'write_data': attempt('/data/new.txt'), 'write_usr': attempt('/usr/new.txt'),
    'write_root': attempt('/new.txt'), 'write_work': attempt('/work/out.txt'),
    'write_tmp': attempt('/tmp/t.txt'), 'cap_eff': status.get('CapEff'),
    'cap_bnd': status.get('CapBnd'), 'net': net,
    'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
}))
"""


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    d = tmp_path / "input"
    d.mkdir()
    (d / "train.csv").write_text("a,b\n1,2\n")
    # World-writable on the host, so only the read-only mount can stop a write.
    os.chmod(d, 0o777)
    os.chmod(tmp_path, 0o755)
    return d


def probe(run_py: RunPy, input_dir: Path, monkeypatch: pytest.MonkeyPatch,
          **kwargs: object) -> dict[str, object]:
    monkeypatch.setenv("CLOWDER_TEST_SECRET", "host-secret-value")
    r = run_py(PROBE, input_dir=input_dir, env={"GIVEN": "yes"}, **kwargs)
    assert r.verdict is Verdict.OK, r
    data: dict[str, object] = json.loads(r.stdout)
    return data


def test_view_user_env_and_network(run_py: RunPy, input_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    d = probe(run_py, input_dir, monkeypatch)
    assert (d["uid"], d["gid"], d["groups"]) == (65534, 65534, [])
    assert d["cwd"] == "/work" and d["hostname"] == "sandbox"
    env = d["env"]
    assert isinstance(env, dict)
    assert "CLOWDER_TEST_SECRET" not in env
    assert "host-secret-value" not in json.dumps(d)
    assert env["GIVEN"] == "yes" and env["HOME"] == "/work"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONNOUSERSITE"] == "1"
    assert d["cap_eff"] == d["cap_bnd"] == "0000000000000000"
    assert d["net"] != "open"
    # Only the Python environment's own folder under /root; no home folders, no data folder.
    assert d["root_home"] == [".pyenv"] or not sys.prefix.startswith("/root")
    assert "home" not in d["root"]
    assert d["etc"] == ["group", "hostname", "hosts", "nsswitch.conf", "passwd"]
    assert d["data"] == ["train.csv"]
    # Private PID namespace: only the program itself.
    assert d["pids"] == [1]


def test_input_read_only_work_writable(run_py: RunPy, input_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "collected"
    d = probe(run_py, input_dir, monkeypatch, collect_into=out)
    assert d["write_data"] == "EROFS"
    assert d["write_usr"] in ("EROFS", "EACCES") and d["write_root"] in ("EROFS", "EACCES")
    assert d["write_work"] == "written" and d["write_tmp"] == "written"
    assert sorted(os.listdir(input_dir)) == ["train.csv"]
    assert (out / "out.txt").read_text() == "x"


def test_work_folder_is_private_per_run(run_py: RunPy) -> None:
    first = run_py("open('/work/mine', 'w').write('1'); print(__import__('os').listdir('.'))")
    second = run_py("import os; print(os.listdir('/work'))")
    assert first.stdout == b"['mine']\n" and second.stdout == b"[]\n"


def test_bundle_spec_is_locked_down(gvisor: RunscSandbox, tmp_path: Path) -> None:
    from clowder_ml.sandbox.limits import Limits

    prepared = gvisor._prepare("cml-spec", tmp_path, ["python3"], gvisor._env(None), None,
                               None)
    spec = gvisor.spec(prepared, Limits())
    proc = spec["process"]
    assert proc["user"] == {"uid": 65534, "gid": 65534, "additionalGids": []}
    assert proc["noNewPrivileges"] is True
    assert all(v == [] for v in proc["capabilities"].values())
    assert spec["root"]["readonly"] is True
    for m in spec["mounts"]:
        if m["type"] == "bind":
            writable = "rw" in m["options"]
            assert writable == (m["destination"] == "/work"), m
            assert "nosuid" in m["options"] and "nodev" in m["options"]
            assert not m["source"].startswith(("/home", "/etc")), m
            assert m["source"] != "/root" and m["source"] != "/"
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert spec["hostname"] == "sandbox"
    assert stat.S_IMODE(os.stat(prepared.etc / "passwd").st_mode) == 0o644
    assert "shadow" not in os.listdir(prepared.etc)


def test_runsc_missing_is_a_clear_error(sandbox_settings: Settings) -> None:
    settings = sandbox_settings.model_copy(update={"sandbox_runsc_path": "/nonexistent/runsc"})
    with pytest.raises(SandboxUnavailable) as err:
        get_sandbox(settings)
    assert err.value.code == "sandbox_unavailable" and err.value.status == 503
    assert "runsc" in err.value.message and err.value.hint


def test_runsc_that_cannot_start_is_a_clear_error(sandbox_settings: Settings) -> None:
    settings = sandbox_settings.model_copy(update={"sandbox_runsc_path": "/bin/false"})
    sb = get_sandbox(settings)
    with pytest.raises(SandboxUnavailable) as err:
        sb.run(["/bin/true"])
    assert "could not start" in err.value.message


def test_default_backend_is_gvisor_never_a_silent_fallback(sandbox_settings: Settings) -> None:
    assert Settings().sandbox_backend == "gvisor"
    assert isinstance(get_sandbox(sandbox_settings), RunscSandbox)


def test_symlinks_in_the_input_do_not_reach_the_host(run_py: RunPy, input_dir: Path,
                                                      tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    os.chmod(secret, 0o644)
    (input_dir / "absolute").symlink_to(secret)
    (input_dir / "relative").symlink_to("../host-secret.txt")
    r = run_py("""
        for name in ('absolute', 'relative'):
            try:
                print(name, open('/data/' + name).read())
            except OSError as e:
                print(name, type(e).__name__)
    """, input_dir=input_dir)
    assert r.verdict is Verdict.OK, r
    assert b"host secret" not in r.stdout
    assert r.stdout == b"absolute FileNotFoundError\nrelative FileNotFoundError\n"
