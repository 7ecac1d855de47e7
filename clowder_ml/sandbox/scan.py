"""Advisory code scan for user-supplied Python: Bandit plus an AST policy.

``scan(code)`` reads Python source (a preprocessing function, a custom training script, …) and
returns a :class:`ScanReport` of :class:`Finding` objects written for a researcher, ready to
show as editor diagnostics (:meth:`ScanReport.monaco_markers`).

The scan is advice and defense in depth. **The sandbox is the boundary**: code that slips past
the scan (``getattr(__builtins__, "ex" + "ec")``, code fetched at run time, anything clever) is
still contained by the gVisor sandbox, which has no network, read-only inputs and a private
output folder. Nothing here is a security guarantee; it exists to explain early, in the
editor, why something will not work or looks like an attempt to get out.

Contracts:

* :func:`scan` never raises for any ``str`` input. Code that cannot be parsed (a syntax error,
  null bytes, absurd nesting, more than ``max_bytes``) yields exactly one ``CML000`` finding.
* Positions: ``line``/``end_line`` are 1-based; ``column``/``end_column`` are 0-based and count
  characters (code points), end exclusive. :meth:`ScanReport.monaco_markers` converts to
  Monaco's 1-based UTF-16 columns.
* Findings are sorted by position; duplicates (same rule and range) are dropped, and Bandit
  findings that a policy rule already reports on the same line are dropped in its favour.
* ``# nosec`` comments are ignored: user code cannot silence its own scan. Operators can drop
  rules with :attr:`ScanOptions.disabled_rules`.
* A report is *blocked* when any finding is at or above :attr:`ScanOptions.block_at`
  (``"high"`` by default; ``None`` makes the scan purely advisory).
* The code is never written to the user's folders. Bandit gets the source in memory (or, if a
  future Bandit lacks that entry point, through a private temporary file that is removed).

Policy rules (stable ids; see :data:`RULES`): ``CML000`` cannot parse, ``CML001`` risky import,
``CML002`` exec/eval/compile/__import__, ``CML003`` interpreter internals (dunder chains, frame
attributes, ``__builtins__``), ``CML004`` file paths outside the run's folders, ``CML005``
getattr/setattr/delattr/hasattr with computed or internal names, ``CML006`` process and
introspection calls, ``CML007`` namespace introspection builtins. Bandit findings keep Bandit's
test id (``B602``, …) as ``rule_id``.
"""

from __future__ import annotations

import ast
import io
import logging
import posixpath
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from clowder_ml.errors import ValidationFailed

Severity = Literal["low", "medium", "high"]
Confidence = Literal["low", "medium", "high"]
FindingSource = Literal["bandit", "policy"]

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3}

#: Monaco's ``MarkerSeverity`` values (Hint=1, Info=2, Warning=4, Error=8).
MONACO_SEVERITY: dict[Severity, int] = {"low": 2, "medium": 4, "high": 8}

#: Bandit tests skipped by default: noise for data-science code, not risk.
#: B101 assert (researchers assert on data), B311 ``random`` (not used for cryptography),
#: B615 Hugging Face downloads without a pinned revision (the sandbox has no network; the
#: job manifest records exact model digests), B608 SQL built from strings (no database is
#: reachable from training code, and the check is quadratic in the length of a string
#: concatenation, which would let a 50 KB file tie up the scan for minutes).
DEFAULT_BANDIT_SKIPS: frozenset[str] = frozenset({"B101", "B311", "B608", "B615"})


@dataclass(frozen=True)
class Rule:
    """A policy rule: stable id, short title and what it is about."""

    rule_id: str
    title: str
    summary: str


RULES: dict[str, Rule] = {
    r.rule_id: r
    for r in (
        Rule("CML000", "Code cannot be checked",
             "The code does not parse (syntax error, null bytes, too deeply nested or too large);"
             " nothing else was checked."),
        Rule("CML001", "Risky import",
             "Modules that run programs, open network connections, call C code or import by"
             " computed names. Severity depends on the module; `os` is medium, `subprocess` high."),
        Rule("CML002", "Running code from strings",
             "exec, eval, compile and __import__ run or import code that cannot be reviewed."),
        Rule("CML003", "Interpreter internals",
             "Dunder attribute chains (`__class__.__bases__`, `__subclasses__`, `__globals__`),"
             " frame attributes and `__builtins__` are the classic ways out of restrictions."),
        Rule("CML004", "File path outside the run's folders",
             "Literal paths outside the work and data folders, '..' escapes, writes to read-only"
             " inputs. Only paths written literally in the code can be judged; paths computed at"
             " run time are left to the sandbox."),
        Rule("CML005", "Attribute access by computed name",
             "getattr/setattr/delattr/hasattr with names assembled at run time or naming"
             " internals hide what the code touches."),
        Rule("CML006", "Process or introspection call",
             "os.system, os.exec*/spawn*/fork/kill, frame and garbage-collector introspection,"
             " sys.modules."),
        Rule("CML007", "Namespace introspection",
             "globals(), locals(), vars() without arguments and breakpoint()."),
    )
}


@dataclass(frozen=True)
class Finding:
    """One diagnostic.

    ``line``/``end_line`` are 1-based; ``column``/``end_column`` are 0-based character offsets
    (end exclusive). ``message`` says what is wrong for a researcher; ``hint`` says what to do.
    ``source`` is ``"policy"`` for ``CML…`` rules and ``"bandit"`` for Bandit's ``B…`` tests.
    """

    rule_id: str
    severity: Severity
    confidence: Confidence
    line: int
    column: int
    end_line: int
    end_column: int
    message: str
    source: FindingSource
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field (for the API and the editor)."""
        return {
            "rule_id": self.rule_id,
            "severity": self.severity,
            "confidence": self.confidence,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "message": self.message,
            "hint": self.hint,
            "source": self.source,
        }

    def to_monaco(self, lines: Sequence[str] | None = None) -> dict[str, Any]:
        """This finding as a Monaco ``IMarkerData`` (1-based line/column, UTF-16 columns).

        ``lines`` are the source's lines; with them columns are converted from code points to
        UTF-16 units (Monaco's) and empty ranges widen to the rest of the line so the squiggle
        is visible. Without them columns are used as they are.
        """
        start_col = _utf16_col(lines, self.line, self.column)
        end_col = _utf16_col(lines, self.end_line, self.end_column)
        end_line = self.end_line
        if end_line < self.line or (end_line == self.line and end_col <= start_col):
            end_line = self.line
            line_len = _utf16_len(lines, self.line)
            end_col = max(start_col + 1, line_len if line_len is not None else 0)
        message = f"{self.message}\n{self.hint}" if self.hint else self.message
        return {
            "startLineNumber": self.line,
            "startColumn": start_col + 1,
            "endLineNumber": end_line,
            "endColumn": end_col + 1,
            "severity": MONACO_SEVERITY[self.severity],
            "message": message,
            "code": self.rule_id,
            "source": "Bandit" if self.source == "bandit" else "clowder-ml policy",
        }


def _line_text(lines: Sequence[str] | None, line: int) -> str | None:
    if lines is None or not 1 <= line <= len(lines):
        return None
    return lines[line - 1]


def _utf16_col(lines: Sequence[str] | None, line: int, column: int) -> int:
    text = _line_text(lines, line)
    if text is None:
        return column
    prefix = text[:column]
    return len(prefix.encode("utf-16-le")) // 2 + max(0, column - len(text))


def _utf16_len(lines: Sequence[str] | None, line: int) -> int | None:
    text = _line_text(lines, line)
    return None if text is None else len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class ScanOptions:
    """What the scan checks and when it blocks.

    ``block_at``: findings at or above this severity block a run; ``None`` never blocks.
    ``allowed_roots``: absolute folders user code may name in paths (the run's mounts).
    ``read_only_roots``: of those, the ones that are inputs (writes there are flagged).
    ``workdir``: where relative paths resolve. ``bandit``: run Bandit as well as the policy.
    ``bandit_skips``: Bandit test ids not run. ``disabled_rules``: rule ids (``CML…`` or
    ``B…``) dropped from reports. ``max_bytes``: larger code is not scanned (``CML000``).
    """

    block_at: Severity | None = "high"
    allowed_roots: tuple[str, ...] = ("/work", "/data")
    read_only_roots: tuple[str, ...] = ("/data",)
    workdir: str = "/work"
    bandit: bool = True
    bandit_skips: frozenset[str] = DEFAULT_BANDIT_SKIPS
    disabled_rules: frozenset[str] = frozenset()
    max_bytes: int = 512_000

    def __post_init__(self) -> None:
        if self.block_at is not None and self.block_at not in _RANK:
            raise ValueError(f"block_at must be one of {SEVERITIES} or None, not {self.block_at!r}")
        for root in (*self.allowed_roots, *self.read_only_roots, self.workdir):
            if not root.startswith("/"):
                raise ValueError(f"scan roots must be absolute paths, not {root!r}")
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")


@dataclass(frozen=True)
class ScanReport:
    """Findings sorted by position, and whether they block a run at ``block_at``."""

    findings: tuple[Finding, ...]
    block_at: Severity | None = "high"
    notes: tuple[str, ...] = ()
    lines: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        """The findings at or above ``block_at`` (empty when ``block_at`` is ``None``)."""
        return self.blocking_at(self.block_at)

    @property
    def blocked(self) -> bool:
        """True when any finding is at or above ``block_at``."""
        return bool(self.blocking)

    def blocking_at(self, threshold: Severity | None) -> tuple[Finding, ...]:
        """The findings that would block at another threshold (``None``: none)."""
        if threshold is None:
            return ()
        limit = _RANK[threshold]
        return tuple(f for f in self.findings if _RANK[f.severity] >= limit)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity (every severity present, possibly 0)."""
        out: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: blocked, block_at, counts, notes and findings."""
        return {
            "blocked": self.blocked,
            "block_at": self.block_at,
            "counts": self.counts(),
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.findings],
        }

    def monaco_markers(self) -> list[dict[str, Any]]:
        """Every finding as a Monaco marker, for ``monaco.editor.setModelMarkers``."""
        return [f.to_monaco(self.lines) for f in self.findings]

    def raise_if_blocked(self) -> None:
        """Raise :class:`ScanBlocked` when the report blocks a run; otherwise do nothing."""
        if self.blocked:
            raise ScanBlocked(self)


class ScanBlocked(ValidationFailed):
    """The code scan found findings at or above the block level; the run was not started.

    It keeps :class:`ValidationFailed`'s registered code (``validation_failed``, HTTP 422) so
    the API and SDK map it like any validation error; ``report`` carries the findings.
    """

    def __init__(self, report: ScanReport) -> None:
        blocking = report.blocking
        first = blocking[0]
        more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
        super().__init__(
            f"The code scan blocked this run: line {first.line}: {first.message}{more}",
            f"{first.hint} Fix the code, or ask an operator to change the scan's block level"
            f" (now '{report.block_at}').".strip(),
        )
        self.report = report


# --------------------------------------------------------------------------------------------
# entry point


def scan(code: str, options: ScanOptions | None = None) -> ScanReport:
    """Scan Python source with the AST policy and Bandit; never raises for ``str`` input.

    See the module docstring for the position conventions and the blocking rule.
    """
    opts = options or ScanOptions()
    code = code.removeprefix("\ufeff")  # a byte-order mark; editors do not show it either
    lines = tuple(_split_lines(code))
    notes: list[str] = []
    size = len(code.encode("utf-8", errors="surrogatepass"))
    if size > opts.max_bytes:
        found = [_cannot_check(1, 0, f"The code is too large to check ({size} bytes; the limit"
                                     f" is {opts.max_bytes}).",
                               "Split it into smaller files or move data out of the code.")]
        return _report(found, opts, notes, lines)
    tree_or_finding = _parse(code, lines)
    if isinstance(tree_or_finding, Finding):
        return _report([tree_or_finding], opts, notes, lines)
    tree = tree_or_finding
    policy = _Policy(tree, lines, opts)
    try:
        found = policy.run()
    except RecursionError:
        found = [_cannot_check(1, 0, "The code is nested too deeply to check.",
                               "Flatten deeply nested expressions.")]
        return _report(found, opts, notes, lines)
    if opts.bandit:
        issues, bandit_notes = _run_bandit(code, opts.bandit_skips)
        notes.extend(bandit_notes)
        found.extend(_merge_bandit(issues, found, lines, policy.user_code_names))
    return _report(found, opts, notes, lines)


def _report(found: list[Finding], opts: ScanOptions, notes: list[str],
            lines: tuple[str, ...]) -> ScanReport:
    best: dict[tuple[str, int, int, int, int], Finding] = {}
    for f in found:
        if f.rule_id in opts.disabled_rules:
            continue
        key = (f.rule_id, f.line, f.column, f.end_line, f.end_column)
        if key not in best or _RANK[f.severity] > _RANK[best[key].severity]:
            best[key] = f
    ordered = sorted(
        best.values(),
        key=lambda f: (f.line, f.column, f.end_line, f.end_column, -_RANK[f.severity], f.rule_id),
    )
    return ScanReport(tuple(ordered), opts.block_at, tuple(notes), lines)


def _split_lines(code: str) -> list[str]:
    """Lines the way Python's tokenizer counts them (\\r\\n, \\r and \\n end a line)."""
    return re.split(r"\r\n|\r|\n", code)


def _cannot_check(line: int, column: int, message: str, hint: str,
                  end_line: int | None = None, end_column: int | None = None) -> Finding:
    return Finding("CML000", "high", "high", line, column, end_line or line,
                   end_column if end_column is not None else column + 1, message, "policy", hint)


def _parse(code: str, lines: Sequence[str]) -> ast.Module | Finding:
    if "\0" in code:  # Python 3.11 raises ValueError, 3.12 a SyntaxError without a position
        line, column = _locate(code, "\0")
        return _cannot_check(line, column, "The code contains a NUL character, so Python cannot"
                             " read it.", "Remove it; the file may not be Python source.")
    try:
        return ast.parse(code, filename="<user code>", type_comments=False)
    except SyntaxError as exc:
        line = max(1, exc.lineno or 1)
        column = max(0, (exc.offset or 1) - 1)
        end_line = exc.end_lineno if exc.end_lineno and exc.end_lineno >= line else line
        end_column = (exc.end_offset - 1) if exc.end_offset else column + 1
        if (end_line, end_column) <= (line, column):
            end_line, end_column = line, column + 1
        kind = "indentation" if isinstance(exc, IndentationError) else "syntax"
        return _cannot_check(
            line, column, f"Python cannot read this line ({kind} error: {exc.msg}).",
            "Fix this error first; nothing else was checked until the code parses.",
            end_line, end_column,
        )
    except ValueError as exc:  # pragma: no cover - NUL is handled above; defensive
        return _cannot_check(1, 0, f"The code cannot be read: {exc}.",
                             "Make sure the file is Python source.")
    except (RecursionError, MemoryError):
        return _cannot_check(1, 0, "The code is nested too deeply to check.",
                             "Flatten deeply nested expressions.")


def _locate(code: str, needle: str) -> tuple[int, int]:
    index = code.find(needle)
    if index < 0:
        return 1, 0
    before = _split_lines(code[:index])
    return len(before), len(before[-1])


# --------------------------------------------------------------------------------------------
# the AST policy: tables

_E = "The sandbox has no network and cannot reach other machines."

#: Module (or ``module.name``) -> (severity, why). ``None`` marks an allowed name under a
#: flagged module (``os.path``, ``urllib.parse``). Longest dotted prefix wins.
_MODULES: dict[str, tuple[Severity, str] | None] = {
    "subprocess": ("high", "runs other programs; training code cannot run programs and the"
                           " sandbox has no shell"),
    "pty": ("high", "starts programs in a pseudo-terminal; the sandbox has no shell"),
    "pexpect": ("high", "drives other programs; the sandbox has no shell"),
    "_posixsubprocess": ("high", "starts programs; the sandbox has no shell"),
    "posix": ("high", "is the raw operating-system interface (use pathlib for files)"),
    "nt": ("high", "is the raw operating-system interface (use pathlib for files)"),
    "socket": ("high", f"opens network connections. {_E}"),
    "ctypes": ("high", "calls C code directly and can bypass Python's safety checks"),
    "_ctypes": ("high", "calls C code directly and can bypass Python's safety checks"),
    "cffi": ("high", "calls C code directly and can bypass Python's safety checks"),
    "importlib": ("high", "imports modules by computed names, which hides what the code uses"),
    "importlib.metadata": None,
    "importlib.resources": None,
    "builtins": ("high", "reaches Python's built-in functions by name, a common way to hide"
                         " exec and eval"),
    "__builtin__": ("high", "reaches Python's built-in functions by name"),
    "marshal": ("high", "loads raw Python bytecode"),
    "code": ("high", "runs Python source given as strings"),
    "codeop": ("high", "compiles Python source given as strings"),
    "os": ("medium", "reaches the operating system (programs, environment, raw files); for"
                     " paths prefer pathlib or os.path"),
    "os.path": None,
    "pickle": ("medium", "loads files by running code stored inside them"),
    "_pickle": ("medium", "loads files by running code stored inside them"),
    "cPickle": ("medium", "loads files by running code stored inside them"),
    "dill": ("medium", "loads files by running code stored inside them"),
    "cloudpickle": ("medium", "loads files by running code stored inside them"),
    "shelve": ("medium", "stores data as pickles, which run code when loaded"),
    "signal": ("medium", "changes how the process reacts to signals; the platform enforces"
                         " time limits from outside"),
    "resource": ("medium", "changes process limits; the platform sets them"),
    "multiprocessing": ("low", "starts extra processes; the sandbox caps the number of"
                               " processes (DataLoader workers are fine)"),
    "shutil": ("low", "copies, moves and deletes whole folder trees; only the work folder is"
                      " writable"),
    **{m: ("medium", f"talks to the network. {_E}") for m in (
        "urllib", "urllib2", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib",
        "smtplib", "telnetlib", "poplib", "imaplib", "nntplib", "socketserver", "xmlrpc",
        "paramiko", "websocket", "websockets", "ssl", "asyncssh", "pycurl",
    )},
    "urllib.parse": None,
    "http.HTTPStatus": None,
}

#: Calls (by qualified name) that start programs or change the process: always high.
_PROCESS_CALLS: frozenset[str] = frozenset(
    [f"os.{n}" for n in (
        "system", "popen", "fork", "forkpty", "kill", "killpg", "startfile", "chroot",
        "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid",
        "setresgid", "posix_spawn", "posix_spawnp", "execl", "execle", "execlp", "execlpe",
        "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
        "spawnv", "spawnve", "spawnvp", "spawnvpe", "plock",
    )]
    + ["pty.spawn", "pty.fork", "posix.system", "nt.system"]
)
for _name in list(_PROCESS_CALLS):
    _MODULES[_name] = ("high", "starts or controls other processes; training code cannot")

#: Introspection calls that reach frames, all live objects or the module table: medium.
_INTROSPECTION_CALLS: dict[str, str] = {
    "sys._getframe": "reads the interpreter's call frames",
    "sys._current_frames": "reads the interpreter's call frames",
    "sys.settrace": "hooks into every line the interpreter runs",
    "sys.setprofile": "hooks into every call the interpreter makes",
    "sys.modules": "edits or reads the table of loaded modules, which can swap modules out",
    "inspect.currentframe": "reads the interpreter's call frames",
    "inspect.stack": "reads the interpreter's call frames",
    "inspect.trace": "reads the interpreter's call frames",
    "inspect.getouterframes": "reads the interpreter's call frames",
    "inspect.getinnerframes": "reads the interpreter's call frames",
    "gc.get_objects": "lists every live object in the interpreter",
    "gc.get_referrers": "walks the interpreter's object graph",
    "gc.get_referents": "walks the interpreter's object graph",
}

_CODE_BUILTINS: dict[str, tuple[str, str]] = {
    "exec": ("`exec()` runs a string as Python code, so what actually runs cannot be checked"
             " before the run.",
             "Write the code out directly; to choose between behaviours use if/else or a dict of"
             " functions."),
    "eval": ("`eval()` runs a string as Python code, so what actually runs cannot be checked"
             " before the run.",
             "To read numbers or lists from text use ast.literal_eval() or json.loads(); to pick"
             " a function by name use a dict of functions."),
    "compile": ("`compile()` turns a string into runnable code.",
                "For regular expressions use re.compile(); for models use torch.compile()."),
    "__import__": ("`__import__()` imports a module by a computed name, which hides what the"
                   " code uses.",
                   "Use a normal import statement at the top of the file."),
}

_INTROSPECTION_BUILTINS: dict[str, tuple[Severity, str, str]] = {
    "globals": ("medium", "`globals()` exposes and lets code rewrite the module's namespace,"
                          " including its built-ins.",
                "Pass values explicitly, or keep them in a dict of your own."),
    "locals": ("low", "`locals()` exposes the function's variables as a dict.",
               "Pass values explicitly, or keep them in a dict of your own."),
    "vars": ("low", "`vars()` without an argument exposes the current namespace.",
             "Pass values explicitly; vars(obj) with an argument is fine."),
    "breakpoint": ("medium", "`breakpoint()` opens a debugger, but a sandboxed run has no"
                             " terminal to debug from.",
                   "Remove it; use print() or logging and read the run's log."),
}

#: Dunder attributes that reach interpreter internals: high.
_DANGEROUS_DUNDERS: frozenset[str] = frozenset({
    "__subclasses__", "__bases__", "__base__", "__mro__", "__globals__", "__builtins__",
    "__code__", "__closure__", "__func__", "__self__", "__getattribute__", "__reduce__",
    "__reduce_ex__", "__import__", "__loader__", "__spec__",
})
#: Dunder attributes that are unusual in training code: medium.
_SUSPICIOUS_DUNDERS: frozenset[str] = frozenset({
    "__class__", "__dict__", "__traceback__", "__defaults__", "__kwdefaults__", "__wrapped__",
    "__objclass__", "__weakref__", "__dictoffset__", "__setattr__", "__delattr__",
})
#: Attributes of frames, generators, coroutines, tracebacks and code objects: high.
_FRAME_ATTRS: frozenset[str] = frozenset({
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame", "co_code", "func_globals",
})
#: After ``__class__`` these are harmless (``self.__class__.__name__``).
_NAME_DUNDERS: frozenset[str] = frozenset({"__name__", "__qualname__", "__module__", "__doc__"})
_INTERNAL_NAMES: frozenset[str] = _DANGEROUS_DUNDERS | _FRAME_ATTRS

_ATTR_FUNCS: frozenset[str] = frozenset({"getattr", "setattr", "delattr", "hasattr"})
#: Names that getattr must not reach by string either.
_HIDDEN_TARGETS: frozenset[str] = (
    frozenset(_CODE_BUILTINS) | {n.split(".", 1)[1] for n in _PROCESS_CALLS if n.startswith("os.")}
    | {"globals", "locals", "vars", "modules", "_getframe", "import_module"}
)

# File access: calls whose string arguments are paths.
_PATH_CALLS: frozenset[str] = frozenset({
    "open", "io.open", "codecs.open", "os.open", "os.listdir", "os.scandir", "os.walk",
    "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.makedirs", "os.mkdir",
    "os.rename", "os.renames", "os.replace", "os.chmod", "os.chown", "os.stat", "os.lstat",
    "os.readlink", "os.symlink", "os.link", "os.truncate", "os.chdir", "os.access",
    "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.getsize", "os.path.realpath",
    "os.path.abspath", "glob.glob", "glob.iglob", "shutil.copy", "shutil.copy2",
    "shutil.copyfile", "shutil.copytree", "shutil.rmtree", "shutil.move",
    "shutil.make_archive", "shutil.unpack_archive", "zipfile.ZipFile", "tarfile.open",
    "sqlite3.connect", "h5py.File",
})
_PATH_CONSTRUCTORS: frozenset[str] = frozenset({
    "pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath",
})
_PATH_JOIN: frozenset[str] = frozenset({"os.path.join", "posixpath.join"})
#: Method names (any receiver) whose string arguments are paths (pandas, numpy, torch, HF, PIL).
_PATH_METHODS: frozenset[str] = frozenset({
    "read_csv", "read_json", "read_parquet", "read_table", "read_excel", "read_feather",
    "read_pickle", "read_hdf", "read_fwf", "read_orc", "read_sas", "read_stata", "read_spss",
    "read_xml", "to_csv", "to_json", "to_parquet", "to_excel", "to_pickle", "to_feather",
    "to_hdf", "to_stata", "to_xml", "load", "save", "loadtxt", "savetxt", "savez",
    "savez_compressed", "genfromtxt", "fromfile", "tofile", "memmap", "from_pretrained",
    "save_pretrained", "load_dataset", "load_from_disk", "save_to_disk", "imread", "imwrite",
    "imsave", "open", "ZipFile", "File",
})
_WRITE_METHODS: frozenset[str] = frozenset({
    "to_csv", "to_json", "to_parquet", "to_excel", "to_pickle", "to_feather", "to_hdf",
    "to_stata", "to_xml", "save", "savetxt", "savez", "savez_compressed", "tofile",
    "save_pretrained", "save_to_disk", "imwrite", "imsave", "os.makedirs", "os.mkdir",
    "os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace", "shutil.rmtree",
    "shutil.move", "shutil.copytree",
})
_PATH_KWARGS: frozenset[str] = frozenset({
    "file", "path", "fname", "filename", "filepath", "filepath_or_buffer", "path_or_buf",
    "path_or_buffer", "fp", "pretrained_model_name_or_path", "save_directory", "dataset_path",
    "data_dir", "data_files", "cache_dir", "dst", "src", "name",
})

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_Pos = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------
# the AST policy: checks


class _Policy:
    """One pass over a parsed module; :meth:`run` returns the policy findings (unsorted)."""

    def __init__(self, tree: ast.Module, lines: Sequence[str], opts: ScanOptions) -> None:
        self.tree = tree
        self.lines = lines
        self.opts = opts
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.aliases = _import_aliases(tree)
        self.module_bindings = _module_bindings(tree)
        self.deleted = {
            t.id for n in ast.walk(tree) if isinstance(n, ast.Delete)
            for t in n.targets if isinstance(t, ast.Name)
        }
        self._scope_cache: dict[ast.AST, frozenset[str]] = {}
        self._path_expr_cache: dict[ast.AST, bool] = {}
        self.found: list[Finding] = []
        #: (line, column) of exec/eval/compile/__import__ names that are the user's own
        #: functions; Bandit's B102/B307 there are dropped.
        self.user_code_names: set[tuple[int, int]] = set()

    # -- plumbing

    def run(self) -> list[Finding]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
            elif isinstance(node, ast.Name):
                self._name(node)
            elif isinstance(node, ast.Attribute):
                self._attribute(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self._string(node)
            if isinstance(node, ast.Call):
                self._call(node)
            if isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)) and self._chain_top(node):
                self._dunder_chain(node)
            if self._call_kind(node) == "use":
                self._path_args(cast(ast.Call, node))
            parent = self.parents.get(node)
            if self._is_path_expr(node) and not self._is_path_expr(parent):
                writes = (self._call_kind(parent) == "use"
                          and self._call_writes(cast(ast.Call, parent)))
                self._judge_path(node, writes)
        return self.found

    def _pos(self, node: ast.AST) -> _Pos:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        end_line = getattr(node, "end_lineno", None) or line
        end_col = getattr(node, "end_col_offset", None)
        if end_col is None:
            end_col = col + 1
        return (line, _char_col(self.lines, line, col), end_line,
                _char_col(self.lines, end_line, end_col))

    def _add(self, rule_id: str, severity: Severity, confidence: Confidence, node: ast.AST,
             message: str, hint: str) -> None:
        line, col, end_line, end_col = self._pos(node)
        self.found.append(Finding(rule_id, severity, confidence, line, col, end_line, end_col,
                                  message, "policy", hint))

    def _qualname(self, node: ast.AST | None) -> str | None:
        """``os.path.join`` for ``os.path.join`` (imports resolved), else ``None``."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def _is_builtin_ref(self, node: ast.Name) -> bool:
        """True when this name, read here, can be Python's built-in of that name.

        A name bound in an enclosing function (parameter, assignment, def, import, …) is the
        user's; so is a name bound unconditionally at the top of the module before this use
        (or anywhere, for uses inside functions), unless the name is ever deleted. Bindings
        inside ``if``/``try`` at module level do not count: they may not happen.
        """
        name = node.id
        if self.aliases.get(name) in {f"builtins.{name}", f"__builtin__.{name}"}:
            return True  # from builtins import eval
        parent = self.parents.get(node)
        in_function = False
        while parent is not None:
            if isinstance(parent, _SCOPES):
                in_function = True
                if name in self._function_bindings(parent):
                    return False
            parent = self.parents.get(parent)
        if name in self.deleted:
            return True
        bound_at = self.module_bindings.get(name)
        if bound_at is None:
            return True
        return not in_function and bound_at >= getattr(node, "lineno", 0)

    def _function_bindings(self, func: ast.AST) -> frozenset[str]:
        cached = self._scope_cache.get(func)
        if cached is not None:
            return cached
        names: set[str] = set()
        declared_global: set[str] = set()
        args = cast("ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda", func).args
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                names.add(a.arg)
        body: list[ast.AST] = (
            [func.body] if isinstance(func, ast.Lambda)
            else list(cast("ast.FunctionDef | ast.AsyncFunctionDef", func).body)
        )
        stack = list(body)
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                declared_global.update(n.names)
            names.update(_bound_names(n))
            if isinstance(n, (*_SCOPES, ast.ClassDef)):
                continue  # a nested scope's own bindings are not ours
            stack.extend(ast.iter_child_nodes(n))
        result = frozenset(names - declared_global)
        self._scope_cache[func] = result
        return result

    def _chain_top(self, node: ast.AST) -> bool:
        parent = self.parents.get(node)
        return not (
            (isinstance(parent, ast.Attribute) and parent.value is node)
            or (isinstance(parent, ast.Call) and parent.func is node)
            or (isinstance(parent, ast.Subscript) and parent.value is node)
        )

    # -- CML001 imports

    def _import(self, node: ast.Import) -> None:
        for alias in node.names:
            rule = _module_rule(alias.name)
            if rule is not None:
                self._import_finding(alias, alias.name, rule)

    def _import_from(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # relative imports: user code is a single file
        module = node.module
        worst: tuple[Severity, str] | None = None
        named: list[str] = []
        for alias in node.names:
            if alias.name == "*":
                rule = _star_rule(module)
            else:
                rule = _module_rule(f"{module}.{alias.name}")
            if rule is None:
                continue
            if worst is None or _RANK[rule[0]] > _RANK[worst[0]]:
                worst, named = rule, [alias.name]
            elif rule[0] == worst[0]:
                named.append(alias.name)
        if worst is not None:
            what = module if named == ["*"] else f"{module} ({', '.join(named)})"
            self._import_finding(node, what, worst)

    def _import_finding(self, node: ast.AST, what: str, rule: tuple[Severity, str]) -> None:
        severity, why = rule
        hint = {
            "high": "Remove this import; training code does not need it.",
            "medium": "Use it only if you must; most training code does not need it.",
            "low": "This is usually fine; keep in mind the sandbox's limits.",
        }[severity]
        self._add("CML001", severity, "high", node, f"Importing `{what}`: it {why.rstrip('.')}.",
                  hint)

    # -- CML002 / CML003 / CML006 / CML007 names

    def _name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        name = node.id
        if name in _CODE_BUILTINS:
            if self._is_builtin_ref(node):
                message, hint = _CODE_BUILTINS[name]
                self._add("CML002", "high", "high", node, message, hint)
            else:
                self.user_code_names.add(self._pos(node)[:2])
        elif name == "__builtins__":
            self._add("CML003", "high", "high", node,
                      "`__builtins__` gives direct access to exec, eval, open and every other"
                      " built-in, a classic way around restrictions.",
                      "Call built-in functions by their plain names.")
        elif name in ("__loader__", "__spec__"):
            self._add("CML003", "medium", "medium", node,
                      f"`{name}` exposes how this module was loaded.",
                      "Training code should not need it; remove it.")
        elif name in self.aliases:
            qual = self.aliases[name]
            if qual in _PROCESS_CALLS:
                self._process_call(node, qual)
            elif qual in _INTROSPECTION_CALLS:
                self._introspection_call(node, qual)

    def _attribute(self, node: ast.Attribute) -> None:
        qual = self._qualname(node)
        if qual is None:
            return
        if qual in _PROCESS_CALLS:
            self._process_call(node, qual)
        elif qual in _INTROSPECTION_CALLS:
            self._introspection_call(node, qual)
        elif node.attr in _CODE_BUILTINS and qual.rsplit(".", 1)[0] in (
            "builtins", "__builtins__", "__builtin__"
        ):
            message, hint = _CODE_BUILTINS[node.attr]
            self._add("CML002", "high", "high", node, message, hint)

    def _process_call(self, node: ast.AST, qual: str) -> None:
        self._add("CML006", "high", "high", node,
                  f"`{qual}` starts or controls other processes. Training code cannot run"
                  " programs; the sandbox has no shell and no programs besides Python.",
                  "Do the work in Python instead (pathlib, shutil, pandas, …).")

    def _introspection_call(self, node: ast.AST, qual: str) -> None:
        self._add("CML006", "medium", "high", node,
                  f"`{qual}` {_INTROSPECTION_CALLS[qual]}; training code does not need this.",
                  "Remove it; pass values explicitly and log with print() or logging.")

    def _call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and self._is_builtin_ref(func):
            if func.id in _INTROSPECTION_BUILTINS and not (func.id == "vars" and node.args):
                severity, message, hint = _INTROSPECTION_BUILTINS[func.id]
                self._add("CML007", severity, "high", node, message, hint)
            elif func.id in _ATTR_FUNCS and len(node.args) >= 2:
                self._attr_func(node, func.id)

    # -- CML005 getattr & co

    def _attr_func(self, node: ast.Call, func: str) -> None:
        target, name_arg = node.args[0], node.args[1]
        folded = _fold_str(name_arg)
        literal = isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)
        if folded is not None:
            if folded in _INTERNAL_NAMES or folded in _HIDDEN_TARGETS:
                built = "" if literal else " (assembled from pieces)"
                self._add("CML005", "high", "high", node,
                          f"`{func}(…, {folded!r})`{built} reaches `{folded}` by name, which"
                          " hides it from review.",
                          "Write what you mean directly; training code cannot use exec, eval,"
                          " process calls or interpreter internals, by name or otherwise.")
            elif folded in _SUSPICIOUS_DUNDERS:
                self._add("CML005", "medium", "high", node,
                          f"`{func}(…, {folded!r})` touches the interpreter-level attribute"
                          f" `{folded}`.",
                          "Training code rarely needs this; use the object's public attributes.")
            elif not literal:
                self._add("CML005", "medium", "medium", node,
                          f"The attribute name in `{func}` is assembled from pieces (it comes"
                          f" to {folded!r}), which only makes the code harder to read.",
                          f"Write `obj.{folded}` directly." if folded.isidentifier()
                          else "Write the attribute name out in full.")
            return
        target_qual = self._qualname(target) or ""
        if isinstance(target, ast.Name) and target.id == "__builtins__":
            target_qual = "__builtins__"
        rule = _module_rule(target_qual) if target_qual else None
        if target_qual in ("builtins", "__builtins__", "__builtin__", "os", "sys") or (
            rule is not None and rule[0] == "high"
        ):
            self._add("CML005", "high", "medium", node,
                      f"`{func}` looks up a name computed at run time on `{target_qual}`, which"
                      " can reach anything in it, including exec or system.",
                      "Call the function you need directly.")
        elif func in ("setattr", "delattr"):
            self._add("CML005", "medium", "medium", node,
                      f"`{func}` changes an attribute whose name is only known at run time;"
                      " the scan cannot tell which.",
                      "Fine for copying config fields onto an object; otherwise set attributes"
                      " directly.")
        elif func == "getattr":
            self._add("CML005", "low", "low", node,
                      f"`{func}` reads an attribute whose name is only known at run time; the"
                      " scan cannot tell which.",
                      "Fine for choosing e.g. an optimizer class from a config; for a few fixed"
                      " choices a dict is clearer.")

    # -- CML003 dunder chains and strings

    def _dunder_chain(self, top: ast.AST) -> None:
        attrs: list[str] = []
        node: ast.AST = top
        while True:
            if isinstance(node, ast.Attribute):
                attrs.append(node.attr)
                node = node.value
            elif isinstance(node, ast.Call):
                node = node.func
            elif isinstance(node, ast.Subscript):
                node = node.value
            else:
                break
        attrs.reverse()
        flagged: list[str] = []
        severity: Severity = "medium"
        suspicious = 0
        for i, attr in enumerate(attrs):
            if attr in _INTERNAL_NAMES:
                flagged.append(attr)
                severity = "high"
            elif attr in _SUSPICIOUS_DUNDERS:
                if attr == "__class__" and i + 1 < len(attrs) and attrs[i + 1] in _NAME_DUNDERS:
                    continue
                flagged.append(attr)
                suspicious += 1
        if not flagged:
            return
        if suspicious >= 2:
            severity = "high"
        chain = ".".join(flagged)
        if severity == "high":
            message = (f"`{chain}` walks Python's internals (classes, functions' globals,"
                       " frames); this is the classic way to get around restrictions.")
            hint = "Training code never needs this; use the objects' public attributes."
        else:
            message = f"`{chain}` reaches an interpreter-level attribute of the object."
            hint = ("Usually unnecessary in training code; `type(obj).__name__` or the object's"
                    " public attributes are clearer.")
        self._add("CML003", severity, "high" if severity == "high" else "medium", top,
                  message, hint)

    def _string(self, node: ast.Constant) -> None:
        value = cast(str, node.value)
        if value not in _INTERNAL_NAMES:
            return
        parent = self.parents.get(node)
        if (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name)
                and parent.func.id in _ATTR_FUNCS and node in parent.args[1:2]):
            return  # CML005 reports it
        self._add("CML003", "medium", "medium", node,
                  f"The string {value!r} names an interpreter internal; code that looks it up"
                  " by name reaches Python's internals.",
                  "Training code never needs this; remove it.")

    # -- CML004 paths

    def _call_kind(self, node: ast.AST | None) -> str | None:
        """``"ctor"``/``"join"`` for Path(...)/os.path.join(...), ``"use"`` for file calls."""
        if not isinstance(node, ast.Call):
            return None
        qual = self._qualname(node.func)
        if qual in _PATH_CONSTRUCTORS:
            return "ctor"
        if qual in _PATH_JOIN:
            return "join"
        if qual in _PATH_CALLS:
            return "use"
        if isinstance(node.func, ast.Attribute) and node.func.attr in _PATH_METHODS:
            return "use"
        if (isinstance(node.func, ast.Name) and node.func.id in self.aliases
                and self.aliases[node.func.id].rsplit(".", 1)[-1] in _PATH_METHODS):
            return "use"  # from numpy import load; from PIL.Image import open
        return None

    def _is_path_expr(self, node: ast.AST | None) -> bool:
        """Path(...), os.path.join(...) or ``path / "x"`` built on one of them (memoized)."""
        if node is None:
            return False
        known = self._path_expr_cache.get(node)
        if known is not None:
            return known
        # Walk down a ``/`` chain iteratively (chains can be long), then fill the cache upwards.
        chain: list[ast.AST] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.Div):
            if cur in self._path_expr_cache:
                break
            chain.append(cur)
            cur = cur.left
        result = self._path_expr_cache.get(cur)
        if result is None:
            result = self._call_kind(cur) in ("ctor", "join")
            self._path_expr_cache[cur] = result
        for link in reversed(chain):
            self._path_expr_cache[link] = result
        return result

    def _fold_path(self, node: ast.AST) -> tuple[str, bool] | None:
        """(text, complete) for a path expression whose leading part is literal."""
        if isinstance(node, ast.Call) and self._call_kind(node) in ("ctor", "join"):
            if not node.args:
                return (".", True) if self._call_kind(node) == "ctor" else None
            text = ""
            for arg in node.args:
                part = self._fold_path(arg)
                if part is None:
                    return (text, False) if text else None
                text = posixpath.join(text, part[0]) if text else part[0]
                if not part[1]:
                    return text, False
            return text, True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = self._fold_path(node.left)
            if left is None or not left[1]:
                return left
            right = self._fold_path(node.right)
            if right is None:
                return left[0].rstrip("/") + "/", False
            return posixpath.join(left[0], right[0]), right[1]
        return _fold_prefix(node)

    def _path_args(self, call: ast.Call) -> None:
        """Judge the string arguments of a file call (path expressions judge themselves)."""
        writes = self._call_writes(call)
        for arg in (*call.args, *(k.value for k in call.keywords if k.arg in _PATH_KWARGS)):
            if not self._is_path_expr(arg):
                self._judge_path(arg, writes)

    def _call_writes(self, call: ast.Call) -> bool:
        qual = self._qualname(call.func) or ""
        attr = call.func.attr if isinstance(call.func, ast.Attribute) else qual
        if attr in _WRITE_METHODS or qual in _WRITE_METHODS:
            return True
        if attr == "open" or qual in ("io.open", "codecs.open"):
            mode: ast.AST | None = call.args[1] if len(call.args) > 1 else None
            for k in call.keywords:
                if k.arg == "mode":
                    mode = k.value
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
                return any(c in mode.value for c in "wax+")
        return False

    def _judge_path(self, node: ast.AST, writes: bool) -> None:
        folded = self._fold_path(node)
        if folded is None:
            return  # computed at run time: only the sandbox can judge it
        text, complete = folded
        if not text or "://" in text or "\0" in text:
            return
        if text.startswith("~"):
            self._add("CML004", "high", "high", node,
                      f"The path {text!r} points into a home folder, which the sandbox does"
                      " not have.", self._path_hint())
            return
        if not complete:
            self._judge_prefix(node, text)
            return
        resolved = posixpath.normpath(posixpath.join(self.opts.workdir, text))
        if not _under_any(resolved, self.opts.allowed_roots):
            self._add("CML004", "high", "high", node,
                      f"The path {text!r} resolves to {resolved!r}, outside the folders this"
                      f" run can use ({_roots(self.opts.allowed_roots)}).", self._path_hint())
        elif writes and _under_any(resolved, self.opts.read_only_roots):
            self._add("CML004", "medium", "medium", node,
                      f"This writes to {resolved!r}, but the input folders"
                      f" ({_roots(self.opts.read_only_roots)}) are read-only.",
                      f"Write outputs under {self.opts.workdir} instead.")

    def _judge_prefix(self, node: ast.AST, text: str) -> None:
        directory = text[: text.rfind("/") + 1]
        if not directory:
            return
        if ".." in directory.split("/"):
            self._add("CML004", "medium", "medium", node,
                      f"The path starting {text!r} goes up with '..' and continues with a value"
                      " known only at run time, so the scan cannot tell where it ends. (Only"
                      " paths written literally in the code can be judged.)", self._path_hint())
            return
        resolved = posixpath.normpath(posixpath.join(self.opts.workdir, directory))
        if _under_any(resolved, self.opts.allowed_roots) or any(
            _under(root, resolved) for root in self.opts.allowed_roots
        ):
            return
        self._add("CML004", "high", "medium", node,
                  f"The path starts with {directory!r}, outside the folders this run can use"
                  f" ({_roots(self.opts.allowed_roots)}). (Only the literal start of the path"
                  " can be judged; the rest is computed at run time.)", self._path_hint())

    def _path_hint(self) -> str:
        ro = set(self.opts.read_only_roots)
        inputs = [r for r in self.opts.allowed_roots if r in ro]
        outputs = [r for r in self.opts.allowed_roots if r not in ro]
        parts = []
        if inputs:
            parts.append(f"read inputs from {_roots(inputs)}")
        if outputs:
            parts.append(f"write outputs under {_roots(outputs)}")
        text = " and ".join(parts) or "use the folders the run provides"
        return f"{text[0].upper()}{text[1:]}; the sandbox mounts nothing else."


# --------------------------------------------------------------------------------------------
# helpers for the policy


def _char_col(lines: Sequence[str], line: int, byte_col: int) -> int:
    """AST columns are UTF-8 byte offsets; findings use character offsets."""
    if not 1 <= line <= len(lines) or byte_col <= 0:
        return max(0, byte_col)
    text = lines[line - 1]
    encoded = text.encode("utf-8", errors="surrogatepass")
    if byte_col >= len(encoded):
        return len(text) + (byte_col - len(encoded))
    return len(encoded[:byte_col].decode("utf-8", errors="ignore"))


def _module_rule(dotted: str) -> tuple[Severity, str] | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in _MODULES:
            return _MODULES[key]
    return None


def _star_rule(module: str) -> tuple[Severity, str] | None:
    """``from module import *``: the worst rule for anything under the module."""
    rules = [r for k, r in _MODULES.items() if r is not None and (k == module or
                                                               k.startswith(module + "."))]
    base = _module_rule(module)
    if base is not None:
        rules.append(base)
    return max(rules, key=lambda r: _RANK[r[0]], default=None)


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> what it was imported as (``np`` -> ``numpy``, ``P`` -> ``pathlib.Path``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    top = a.name.split(".", 1)[0]
                    out[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _bound_names(node: ast.AST) -> set[str]:
    """Names a single node binds in its scope (targets, defs, imports, handlers, …)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        return {node.id}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".", 1)[0] for a in node.names if a.name != "*"}
    if isinstance(node, ast.ExceptHandler) and node.name:
        return {node.name}
    if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        return {node.name}
    if isinstance(node, ast.MatchMapping) and node.rest:
        return {node.rest}
    return set()


def _module_bindings(tree: ast.Module) -> dict[str, int]:
    """Names bound unconditionally by top-level statements -> line of the first binding."""
    out: dict[str, int] = {}
    for stmt in tree.body:
        names: set[str] = set()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                             ast.Import, ast.ImportFrom)):
            names = _bound_names(stmt)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
        for name in names:
            out.setdefault(name, stmt.lineno)
    return out


_MAX_FOLD = 256


def _fold_str(node: ast.AST) -> str | None:
    """The value of a string expression built only from literals, else ``None``.

    Handles literals, f-strings of literals, ``+``, ``*`` by a small int, ``"".join([...])``,
    slicing (``"cexe"[::-1]``) and ``chr(101)``; results longer than 256 characters give up.
    """
    out = _fold(node, depth=0)
    return out if out is not None and len(out) <= _MAX_FOLD else None


def _fold(node: ast.AST, depth: int) -> str | None:
    if depth > 50:
        return None
    d = depth + 1
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        parts = [_fold(v, d) for v in node.values]
        return None if any(p is None for p in parts) else "".join(cast(list[str], parts))
    if isinstance(node, ast.FormattedValue):
        return _fold(node.value, d) if node.format_spec is None and node.conversion == -1 else None
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add):
            left, right = _fold(node.left, d), _fold(node.right, d)
            return None if left is None or right is None or len(left) + len(right) > _MAX_FOLD \
                else left + right
        if isinstance(node.op, ast.Mult):
            for s_node, n_node in ((node.left, node.right), (node.right, node.left)):
                s = _fold(s_node, d)
                if s is not None and isinstance(n_node, ast.Constant) and \
                        type(n_node.value) is int and 0 <= n_node.value * len(s) <= _MAX_FOLD:
                    return s * n_node.value
        return None
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        s = _fold(node.value, d)
        sl = node.slice
        try:
            lo, hi, step = (_slice_bound(b) for b in (sl.lower, sl.upper, sl.step))
        except ValueError:
            return None
        return None if s is None or step == 0 else s[lo:hi:step]
    if isinstance(node, ast.Call) and not node.keywords:
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "join" and len(node.args) == 1
                and isinstance(node.args[0], (ast.List, ast.Tuple))):
            sep = _fold(func.value, d)
            items = [_fold(e, d) for e in node.args[0].elts]
            if sep is None or any(i is None for i in items):
                return None
            joined = sep.join(cast(list[str], items))
            return joined if len(joined) <= _MAX_FOLD else None
        if isinstance(func, ast.Name) and func.id == "chr" and len(node.args) == 1:
            try:
                n = _slice_bound(node.args[0])
            except ValueError:
                return None
            return chr(n) if n is not None and 0 <= n < 0x110000 else None
    return None


def _slice_bound(node: ast.AST | None) -> int | None:
    """The int of an int literal (``-3`` too), ``None`` for no node; ValueError otherwise."""
    if node is None:
        return None
    negate = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    if negate:
        node = cast(ast.UnaryOp, node).operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        value: int = node.value
        return -value if negate else value
    raise ValueError("not an int literal")


def _fold_prefix(node: ast.AST) -> tuple[str, bool] | None:
    """(literal text, complete) for a string expression, or its literal leading part."""
    full = _fold_str(node)
    if full is not None:
        return full, True
    if isinstance(node, ast.JoinedStr):
        text = ""
        for v in node.values:
            part = _fold(v, 0)
            if part is None:
                break
            text += part
        return (text, False) if text else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _fold_prefix(node.left)
        if left is None or not left[1]:
            return left
        return left[0], False
    return None


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def _under_any(path: str, roots: Iterable[str]) -> bool:
    return any(_under(path, r) for r in roots)


def _roots(roots: Iterable[str]) -> str:
    return ", ".join(roots)


# --------------------------------------------------------------------------------------------
# Bandit


@dataclass(frozen=True)
class _BanditIssue:
    test_id: str
    test_name: str
    severity: str
    confidence: str
    text: str
    line: int
    col: int
    end_line: int
    end_col: int


_BANDIT_LOCK = threading.Lock()
# A path that does not exist: Bandit only derives a module name from it.
_BANDIT_FNAME = "/clowder-ml-scan/user_code.py"
#: Feed Bandit from memory through ``BanditManager._parse_file`` (private, but present in every
#: Bandit since 1.0). When it is missing, or this is False, a private temp file is used.
_BANDIT_IN_MEMORY = True


def _run_bandit(code: str, skips: frozenset[str]) -> tuple[list[_BanditIssue], list[str]]:
    """Run Bandit on ``code`` without touching the user's folders; (issues, notes)."""
    try:
        from bandit.core import config as b_config
        from bandit.core import manager as b_manager
    except ImportError:  # pragma: no cover - bandit is a dependency
        return [], ["Bandit is not installed; only the policy checks ran."]
    data = code.encode("utf-8", errors="surrogatepass")
    bandit_log = logging.getLogger("bandit")
    with _BANDIT_LOCK:
        # Bandit logs its plugins' internal errors with tracebacks; they become a note here.
        level = bandit_log.level
        bandit_log.setLevel(logging.CRITICAL)
        try:
            mgr = b_manager.BanditManager(
                b_config.BanditConfig(), "file", quiet=True, ignore_nosec=True,
                profile={"exclude": sorted(skips)},
            )
            parse_file = getattr(mgr, "_parse_file", None)
            if _BANDIT_IN_MEMORY and callable(parse_file):
                parse_file(_BANDIT_FNAME, io.BytesIO(data), [_BANDIT_FNAME])
            else:
                _bandit_via_tempfile(mgr, data)
        except Exception as exc:  # Bandit's own failure must not fail the scan
            return [], [f"Bandit could not check this code ({type(exc).__name__}); only the"
                        " policy checks ran."]
        finally:
            bandit_log.setLevel(level)
        notes = [f"Bandit skipped the code: {reason}." for _, reason in mgr.skipped]
        issues = [_bandit_issue(r) for r in mgr.results]
    return issues, notes


def _bandit_via_tempfile(mgr: Any, data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="clowder-ml-scan-") as tmp:
        path = Path(tmp) / "user_code.py"
        path.write_bytes(data)
        mgr.discover_files([str(path)])
        mgr.run_tests()


def _bandit_issue(r: Any) -> _BanditIssue:
    line = int(r.lineno or 1)
    linerange = [int(x) for x in (getattr(r, "linerange", None) or [line])]
    col = max(0, int(getattr(r, "col_offset", 0) or 0))
    end_col = int(getattr(r, "end_col_offset", 0) or 0)
    return _BanditIssue(
        test_id=str(r.test_id), test_name=str(getattr(r, "test", "") or ""),
        severity=str(r.severity).lower(), confidence=str(r.confidence).lower(),
        text=str(r.text), line=line, col=col, end_line=max(line, *linerange), end_col=end_col,
    )


_NO_NET = "The sandbox has no network, so this would fail anyway."
_SHELL_MSG = ("Running shell commands is not allowed in training code; the sandbox has no"
              " shell access.")
_PROGRAM_MSG = ("Starting other programs is not allowed in training code; the sandbox has no"
                " programs besides Python.")
_SHELL_HINT = ("Do the work in Python instead (pathlib, shutil, pandas, …); the sandbox"
               " contains only Python and your inputs.")

#: Bandit test id -> (message, hint, severity override or None). Messages are for researchers.
_BANDIT_TEXT: dict[str, tuple[str, str, Severity | None]] = {
    "B102": ("`exec` runs a string as Python code, so what actually runs cannot be checked.",
             "Write the code out directly.", None),
    "B103": ("This makes a file readable or writable by everyone (chmod).",
             "Outputs get the right permissions automatically; remove the chmod call.", "low"),
    "B104": (f"This starts a server on every network interface. {_NO_NET}",
             "Remove the server code; serve models through the platform.", None),
    "B105": ("This looks like a password or secret written into the code.",
             "Do not put secrets in training code; the sandbox has no network, so it needs no"
             " credentials.", None),
    "B106": ("This passes what looks like a password written into the code.",
             "Do not put secrets in training code.", None),
    "B107": ("A function argument defaults to what looks like a password.",
             "Do not put secrets in training code.", None),
    "B108": ("This uses a fixed file name in a shared temporary folder.",
             "Write scratch files under the work folder or use the tempfile module.", "low"),
    "B110": ("An exception is silently ignored (`except: pass`), so problems in your data go"
             " unnoticed.", "Catch the specific exception you expect, or log it.", None),
    "B112": ("An exception is silently skipped (`except: continue`), so problems in your data"
             " go unnoticed.", "Catch the specific exception you expect, or log it.", None),
    "B113": (f"This web request has no timeout. {_NO_NET}",
             "Add the files to your dataset instead of downloading them.", None),
    "B202": ("Extracting a tar archive without checking its member paths can write files"
             " outside the target folder.",
             "Pass filter='data' to extractall(), or upload the archive as a dataset; the"
             " platform unpacks archives safely.", None),
    "B301": ("Unpickling runs code stored inside the file; a crafted pickle can do anything"
             " your code can.", "Store data as JSON, CSV, Parquet or safetensors.", None),
    "B302": ("`marshal` loads raw Python bytecode, which can run anything.",
             "Store data as JSON, CSV, Parquet or safetensors.", None),
    "B303": ("MD5 and SHA-1 are weak hashes: fine for checksums and deduplication, not for"
             " security.", "Use hashlib.sha256, or pass usedforsecurity=False.", "low"),
    "B306": ("`tempfile.mktemp()` is unsafe: something else may create the file first.",
             "Use tempfile.mkstemp() or tempfile.NamedTemporaryFile().", None),
    "B307": ("`eval` runs a string as Python code, so what actually runs cannot be checked.",
             "To read numbers or lists from text use ast.literal_eval() or json.loads().", None),
    "B310": (f"This opens a URL. {_NO_NET}",
             "Add the files to your dataset instead of downloading them.", None),
    "B312": (f"Telnet sends everything unencrypted. {_NO_NET}", "Remove it.", None),
    "B321": (f"FTP sends everything unencrypted. {_NO_NET}", "Remove it.", None),
    "B323": (f"Certificate checks are turned off for this connection. {_NO_NET}",
             "Remove it.", None),
    "B324": ("MD5 and SHA-1 are weak hashes: fine for checksums and deduplication, not for"
             " security.", "Use hashlib.sha256, or pass usedforsecurity=False.", "low"),
    "B501": (f"Certificate checks are turned off (verify=False). {_NO_NET}",
             "Remove the request; put the data in your dataset.", None),
    "B506": ("`yaml.load` can build arbitrary Python objects from the file.",
             "Use yaml.safe_load().", None),
    "B601": ("This runs commands on another machine over SSH. " + _NO_NET, "Remove it.", "high"),
    "B602": (_SHELL_MSG, "Remove the subprocess call. " + _SHELL_HINT, "high"),
    "B603": (_PROGRAM_MSG, "Remove the subprocess call. " + _SHELL_HINT, "high"),
    "B604": (_SHELL_MSG, "Remove shell=True and the command. " + _SHELL_HINT, "high"),
    "B605": (_SHELL_MSG, "Remove the call. " + _SHELL_HINT, "high"),
    "B606": (_PROGRAM_MSG, "Remove the call. " + _SHELL_HINT, "high"),
    "B607": ("This starts a program found by name on the PATH; the sandbox has no such"
             " programs.", "Remove the call. " + _SHELL_HINT, "high"),
    "B608": ("This builds an SQL query by pasting strings together; values with quotes break it"
             " or change its meaning.", "Use query parameters: cursor.execute(sql, params).",
             None),
    "B609": ("A shell wildcard in a command can be expanded into unexpected arguments.",
             "Remove the command. " + _SHELL_HINT, "high"),
    "B612": (f"`logging.config.listen` opens a network port that accepts code. {_NO_NET}",
             "Configure logging in code.", None),
    "B613": ("The code contains invisible bidirectional-text characters, so it may run"
             " differently from how it reads.", "Remove the hidden Unicode control characters.",
             None),
    "B614": ("`torch.load` unpickles the file, which can run code hidden inside it.",
             "Use torch.load(path, weights_only=True), or save and load with safetensors.", None),
    "B615": ("This downloads from the Hugging Face Hub without pinning a revision. " + _NO_NET,
             "Use a base model registered on the platform, or a local folder.", None),
}
_BANDIT_IMPORT_IDS = frozenset(f"B4{n:02d}" for n in range(1, 16))
#: Bandit id -> rules that report it better when they fire on the same line.
_BANDIT_COVERED_BY: dict[str, frozenset[str]] = {
    "B102": frozenset({"CML002"}), "B307": frozenset({"CML002"}),
    "B605": frozenset({"CML006"}), "B606": frozenset({"CML006"}),
    "B607": frozenset({"CML006", "B602", "B603", "B604", "B605", "B606"}),
    "B108": frozenset({"CML004"}),
    **dict.fromkeys(_BANDIT_IMPORT_IDS, frozenset({"CML001"})),
}
_MODULE_IN_TEXT = re.compile(r"associated with (?:the )?([\w.]+)(?: module)?|import of ([\w.]+)")


def _bandit_finding(issue: _BanditIssue, lines: Sequence[str]) -> Finding:
    known = _BANDIT_TEXT.get(issue.test_id)
    severity = _as_level(issue.severity)
    if known is not None:
        message, hint, override = known
        severity = override or severity
    elif issue.test_id in _BANDIT_IMPORT_IDS:
        m = _MODULE_IN_TEXT.search(issue.text)
        module = next((g for g in m.groups() if g), "this module") if m else "this module"
        message = (f"Importing `{module}` is on Bandit's list of risky modules:"
                   f" {issue.text.rstrip('.')}.")
        hint = "Use it only if you must; most training code does not need it."
    else:
        label = f"{issue.test_id} {issue.test_name}".strip()
        message = f"{issue.text.rstrip('.')} (Bandit {label})."
        hint = "Bandit flags this pattern as risky; rewrite it if you can."
    line, end_line = issue.line, issue.end_line
    col = _char_col(lines, line, issue.col)
    end_col = _char_col(lines, end_line, issue.end_col) if issue.end_col > 0 else col + 1
    if (end_line, end_col) <= (line, col):
        end_line, end_col = line, col + 1
    return Finding(issue.test_id, severity, _as_level(issue.confidence), line, col, end_line,
                   end_col, message, "bandit", hint)


def _merge_bandit(issues: list[_BanditIssue], policy: list[Finding], lines: Sequence[str],
                  user_code_names: set[tuple[int, int]]) -> Iterator[Finding]:
    """Bandit findings, minus those a policy finding (or a better Bandit one) covers."""
    on_line = {(f.rule_id, f.line) for f in policy}
    on_line.update((i.test_id, i.line) for i in issues)
    for issue in issues:
        covered_by = _BANDIT_COVERED_BY.get(issue.test_id, frozenset())
        if any((rule, issue.line) in on_line for rule in covered_by):
            continue
        finding = _bandit_finding(issue, lines)
        if issue.test_id in ("B102", "B307") and (finding.line, finding.column) in user_code_names:
            continue  # the user's own function called eval/exec, not the built-in
        yield finding


def _as_level(value: str) -> Severity:
    value = value.lower()
    return cast(Severity, value) if value in _RANK else "low"


def severity_at_least(severity: Severity, threshold: Severity) -> bool:
    """True when ``severity`` is at or above ``threshold`` (``"high" >= "medium"``)."""
    return _RANK[severity] >= _RANK[threshold]


__all__ = [
    "DEFAULT_BANDIT_SKIPS",
    "MONACO_SEVERITY",
    "RULES",
    "SEVERITIES",
    "Confidence",
    "Finding",
    "FindingSource",
    "Rule",
    "ScanBlocked",
    "ScanOptions",
    "ScanReport",
    "Severity",
    "scan",
    "severity_at_least",
]
