"""Docs that cannot drift: docs/stages.md against the stage functions, and the
code blocks of README.md and docs/*.md against the code they name.

- every function in the stages table imports, takes the documented parameters
  (names, order, defaults, keyword-only marker) and returns the documented type;
- every helper the page lists imports;
- every ``python`` block compiles and its imports resolve (the own-grid example
  of docs/formats.md also runs: tests/io/test_own_grid_example.py); attributes
  read off a documented function's result exist on its return type;
- every ``toml`` / ``json`` block parses;
- every shell command the docs show that this repository provides exists:
  ``make`` targets, ``beastflow`` command lines (parsed by the real CLI parser),
  ``python -m`` modules, scripts under the checkout.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import json
import re
import shlex
import tomllib

import pytest

from tests.conftest import REPO

STAGES_MD = REPO / "docs" / "stages.md"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: parameters the page leaves out on purpose (none: every stage parameter is documented)
_UNDOCUMENTED: set[str] = set()

_CALL = re.compile(r"`(beastflow(?:\.\w+)+)\(([^`]*)\)`")


def _resolve(dotted: str):
    """The object a dotted name denotes: a module, or an attribute of the longest importable module."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _table_rows() -> list[tuple[str, str, str]]:
    """(stage, function cell, returns cell) of the stages table."""
    rows = []
    for line in STAGES_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[0] not in ("stage", "---|---|---|---|---"):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def _documented_calls() -> list[tuple[str, str, str]]:
    """(dotted function, documented argument list, documented return) for every call in the table."""
    calls = []
    for stage, fn_cell, ret_cell in _table_rows():
        m = re.match(r"`([^`]+)`", ret_cell)
        assert m, f"docs/stages.md, {stage}: no return type in the returns column"
        for dotted, args in _CALL.findall(fn_cell):
            calls.append((dotted, args, m.group(1)))
    return calls


def _annotation_text(ann) -> str:
    if isinstance(ann, str):  # modules with `from __future__ import annotations`
        return ann
    return getattr(ann, "__name__", repr(ann))


def test_table_lists_every_stage():
    stages = [r[0] for r in _table_rows()]
    assert stages == [
        "physics model",
        "density map",
        "cut",
        "split",
        "AST inputs",
        "noise model",
        "trim",
        "grid info",
        "fit",
        "merge",
    ]
    assert len(_documented_calls()) == 12  # ten stages, plus the two noise models run_noisemodel hands over to


@pytest.mark.parametrize(
    "dotted,args,returns", _documented_calls(), ids=[c[0].rsplit(".", 1)[-1] for c in _documented_calls()]
)
def test_stage_signature_matches_docs(dotted, args, returns):
    fn = _resolve(dotted)
    sig = inspect.signature(fn)
    actual = []
    for p in sig.parameters.values():
        if p.name in _UNDOCUMENTED:
            assert p.default is not inspect.Parameter.empty, f"{dotted}: {p.name} is required but undocumented"
            continue
        if p.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in actual:
            actual.append("*")
        actual.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}")
    assert _split_top(args) == actual, f"docs/stages.md documents {dotted}({args})"
    assert _annotation_text(sig.return_annotation) == returns, f"docs/stages.md: {dotted} returns {returns}"


def test_documented_result_types_are_dataclasses_of_urls():
    for dotted, _, returns in _documented_calls():
        name = re.sub(r"^list\[(.*)\]$", r"\1", returns)
        if name == "str":
            continue
        cls = getattr(importlib.import_module(dotted.rsplit(".", 1)[0]), name)
        assert dataclasses.is_dataclass(cls), f"{dotted}: {name} is not a dataclass"


def test_listed_helpers_import():
    text = STAGES_MD.read_text()
    helpers = text[text.index("Shared helpers") : text.index("The result dataclasses")]
    names = re.findall(r"`(beastflow(?:\.\w+)+)(?:\([^`]*\))?`", helpers)
    assert len(names) >= 7
    for dotted in names:
        _resolve(dotted)


# ---------------------------------------------------------------- code blocks


def _blocks() -> list[tuple[str, str, str]]:
    """(file:line, language, text) of every fenced block (indented fences too)."""
    out = []
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            indent, lang, start = len(m.group(1)), m.group(2), i + 1
            j = start
            while not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body = "\n".join(line[indent:] for line in lines[start:j])
            out.append((f"{path.relative_to(REPO)}:{start}", lang, body))
            i = j + 1
    return out


def _of(lang: str) -> list[tuple[str, str]]:
    return [(where, body) for where, lg, body in _blocks() if lg == lang]


def test_docs_have_code_blocks():
    langs = {lg for _, lg, _ in _blocks()}
    # a block in a language this file does not check would go untested
    assert langs <= {"python", "bash", "toml", "json", ""}, langs
    assert len(_of("python")) >= 2 and len(_of("bash")) >= 5


@pytest.mark.parametrize("where,body", _of("python"), ids=[w for w, _ in _of("python")])
def test_python_block_imports_resolve(where, body):
    tree = ast.parse(body, filename=where)
    compile(tree, where, "exec")
    results: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(mod, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    # `x = documented_function(...)`, then `x.attr`: attr must exist on the documented return type
    imported = {
        a.asname or a.name: getattr(importlib.import_module(n.module or ""), a.name)
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        for a in n.names
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in imported
            and isinstance(node.targets[0], ast.Name)
        ):
            fn = imported[node.value.func.id]
            fn = getattr(fn, "fn", fn)  # a Prefect flow: the function it wraps
            ret = inspect.signature(fn).return_annotation
            if isinstance(ret, str):
                ret = getattr(inspect.getmodule(fn), ret, None)
            if isinstance(ret, type):
                results[node.targets[0].id] = ret
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in results:
            cls = results[node.value.id]
            fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
            assert hasattr(cls, node.attr) or node.attr in fields, f"{where}: {cls.__name__} has no {node.attr}"


@pytest.mark.parametrize("where,body", _of("toml"), ids=[w for w, _ in _of("toml")])
def test_toml_block_parses(where, body):
    tomllib.loads(body)


@pytest.mark.parametrize("where,body", _of("json"), ids=[w for w, _ in _of("json")])
def test_json_block_parses(where, body):
    json.loads(body)


def _commands(body: str) -> list[list[str]]:
    """The command lines of a shell block: continuations joined, comments and prompts dropped."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"<[^>]*>", "X", line)  # <placeholders>
        line = line.replace("$(", "(").replace("$PWD", "/tmp")
        try:
            out.append(shlex.split(line))
        except ValueError:  # quoting this check does not follow (eval "$(...)"): not ours to check
            continue
    return out


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))


def _check_command(where: str, argv: list[str]) -> bool:
    """Check one command this repository provides; False when it is someone else's (prefect, export ...)."""
    from beastflow.cli import build_parser

    while argv and re.match(r"^\w+=", argv[0]):  # VAR=value command
        argv = argv[1:]
    if not argv:
        return False
    cmd, args = argv[0], argv[1:]
    if cmd == "make":
        assert set(args) <= _makefile_targets(), f"{where}: make {args}: no such target"
        return True
    if cmd in ("beastflow", ".venv/bin/beastflow"):
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"{where}: `beastflow {' '.join(args)}` does not parse") from exc
        return True
    if cmd in ("python", "python3", ".venv/bin/python") and args:
        if args[0] == "-m":
            assert importlib.util.find_spec(args[1]) is not None, f"{where}: python -m {args[1]}: no such module"
        else:
            assert (REPO / args[0]).is_file(), f"{where}: {args[0]}: no such file"
        return True
    if "/" in cmd and not cmd.startswith(("/", "~")):
        assert (REPO / cmd).is_file(), f"{where}: {cmd}: no such file"
        return True
    return False


def test_shell_commands_exist():
    checked = 0
    for where, body in _of("bash") + _of(""):
        for argv in _commands(body):
            checked += _check_command(where, argv)
    assert checked >= 10, checked


def test_shell_check_catches_a_wrong_command():
    with pytest.raises(AssertionError, match="no such target"):
        _check_command("x", ["make", "no-such-target"])
    with pytest.raises(AssertionError, match="does not parse"):
        _check_command("x", ["beastflow", "run", "--no-such-option"])
    assert not _check_command("x", ["prefect", "worker", "start"])


def test_argument_lists_split_outside_brackets():
    assert _split_top("settings, jobs: list[TrimJob(a, b)], *, x=None") == [
        "settings",
        "jobs: list[TrimJob(a, b)]",
        "*",
        "x=None",
    ]
