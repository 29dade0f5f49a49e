"""The layout's rules, read from the source (docs/architecture.md states them):

- `gateway/` never imports `workers/`;
- no import circles between project modules (every import counts: module level,
  TYPE_CHECKING blocks and imports inside functions);
- only `gateway/app.py` and `gateway/http/` touch the app's state (the keys in
  `gateway.appkeys`; its protocols are types anyone may use);
- `gateway/observability/` registers no routes, and its `__init__` imports neither
  prometheus_client nor `metrics` (the multiprocess directory comes first);
- every folder with modules is in the map at the top of docs/architecture.md, which the
  README links.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "workers")
MAP_LINE = re.compile(r"^(?P<folder>(?:gateway|workers)(?:/[\w]+)*)/\s")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported(path: Path) -> Iterator[tuple[str, int]]:
    """(project module, line) for every import in the file, wherever it sits."""
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in known else node.module), node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imported(path):
            if target in known and target != name:
                edges[name].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_gateway_never_imports_workers() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for name, path in modules().items()
        if name.startswith("gateway")
        for target, line in imported(path)
        if target.split(".")[0] == "workers"
    ]
    assert offenders == []


def test_no_import_circles() -> None:
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _reads_app_state(name: str) -> bool:
    return name == "gateway.app" or name.startswith("gateway.http")


def app_state_uses(path: Path) -> Iterator[int]:
    """Lines that reach for the app's state: the `appkeys` module itself or one of its keys
    (UPPER_CASE names). Its protocols (CamelCase) are types anyone may use."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "gateway" and any(a.name == "appkeys" for a in node.names):
                yield node.lineno
            if node.module == "gateway.appkeys" and any(a.name.isupper() for a in node.names):
                yield node.lineno
        elif isinstance(node, ast.Import) and any(a.name == "gateway.appkeys" for a in node.names):
            yield node.lineno


def test_only_app_and_http_touch_the_app_state() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for name, path in modules().items()
        if name != "gateway.appkeys" and not _reads_app_state(name)
        for line in app_state_uses(path)
    ]
    assert offenders == []


def test_observability_registers_no_routes() -> None:
    offenders = []
    for name, path in modules().items():
        if not name.startswith("gateway.observability"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            touches_router = isinstance(node, ast.Attribute) and node.attr == "router"
            adds_route = isinstance(node, ast.Name) and node.id.startswith("add_route")
            if touches_router or adds_route:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        offenders += [
            f"{path.relative_to(ROOT)}:{line} imports {target}"
            for target, line in imported(path)
            if target.startswith("gateway.http")
        ]
    assert offenders == []


def test_observability_init_leaves_prometheus_alone() -> None:
    init = ROOT / "gateway" / "observability" / "__init__.py"
    tree = ast.parse(init.read_text())
    names = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any("prometheus" in n or n.endswith("metrics") for n in names), names


def folders_with_modules() -> set[str]:
    return {str(p.parent.relative_to(ROOT)) for p in modules().values()}


def map_folders(text: str) -> set[str]:
    """The folders of the first fenced block after the given heading's text."""
    block = text.split("```", 2)[1]
    return {m.group("folder") for line in block.splitlines() if (m := MAP_LINE.match(line))}


@cache
def architecture_map() -> set[str]:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    return map_folders(doc[doc.index("## The map") :])


def test_every_folder_is_in_the_architecture_map() -> None:
    assert folders_with_modules() == architecture_map()


def test_readme_points_to_the_map() -> None:
    """The README is for a new user; the map lives in docs/architecture.md, linked from it."""
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("folder", sorted(folders_with_modules()))
def test_each_mapped_folder_says_who_may_import_it(folder: str) -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## The map") :].split("```", 2)[2]
    assert f"`{folder}/`" in section, f"docs/architecture.md does not describe {folder}/"


DOC_IMPORT = re.compile(r"^\s*from ((?:gateway|workers|bench)(?:\.\w+)+) import ([\w, ]+)$", re.M)
DOC_RUN = re.compile(r"python -m ((?:gateway|workers|bench)(?:\.\w+)*)")


def doc_references(text: str) -> Iterator[tuple[str, str | None]]:
    """(module, name) for each `from M import a, b` and (module, None) for `python -m M`."""
    for m in DOC_IMPORT.finditer(text):
        for name in m.group(2).split(","):
            yield m.group(1), name.strip()
    for m in DOC_RUN.finditer(text):
        yield m.group(1), None


def test_doc_references_are_read_from_code_and_commands() -> None:
    text = "x\nfrom gateway.ingest.signatures import decode_secret, sign\nrun python -m bench.e2e\n"
    assert list(doc_references(text)) == [
        ("gateway.ingest.signatures", "decode_secret"),
        ("gateway.ingest.signatures", "sign"),
        ("bench.e2e", None),
    ]


def test_the_docs_name_only_modules_that_exist() -> None:
    """A move that misses a snippet in the README would hand a new user an ImportError."""
    import importlib
    import importlib.util

    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for module, name in doc_references(doc.read_text()):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{doc.name}: {module}")
            elif name is not None and not hasattr(importlib.import_module(module), name):
                missing.append(f"{doc.name}: {module}.{name}")
    assert missing == []
