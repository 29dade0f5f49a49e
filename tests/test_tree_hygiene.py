"""A clone on any machine is the whole project: nothing tracked may lead out of the tree.

A `.venv` symlink into one developer's folder was once committed; every other clone then
failed `make run` with `[Errno 17] File exists` while CI, where the folder existed, stayed
green. These tests read git's index, so they see exactly what a clone gets.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYMLINK_MODE = "120000"

# Absolute paths that only exist on someone's machine: home folders, root's home, the
# workplace's checkouts, Windows profiles. System paths (/usr/bin, /etc) are fine.
DEVELOPER_PATH = re.compile(
    r"(?<![\w.~-])(?:/home/[\w.-]+/|/Users/[\w.-]+/|/root/|/work/[\w.-]+|[A-Za-z]:\\Users\\)"
)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def index() -> list[tuple[str, str, str]]:
    """(mode, object, path) for every tracked file."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist has no index to check)")
    entries = []
    for line in _git("ls-files", "-s", "-z").split("\0"):
        if not line:
            continue
        meta, path = line.split("\t", 1)
        mode, obj, _stage = meta.split()
        entries.append((mode, obj, path))
    return entries


def link_escapes(path: str, target: str) -> bool:
    """True when a link at `path` (relative to the tree) pointing at `target` leaves it."""
    if target.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", target):
        return True
    depth = 0
    for part in (PurePosixPath(path).parent / target).parts:
        if part == "..":
            depth -= 1
        elif part != ".":
            depth += 1
        if depth < 0:
            return True
    return False


def test_link_check_sees_what_escapes() -> None:
    assert link_escapes(".venv", "/work/wt/issue-21-limits/.venv")
    assert link_escapes("docs/a.md", "../../outside")
    assert link_escapes("a", "C:\\Users\\dev")
    assert not link_escapes("docs/a.md", "../README.md")
    assert not link_escapes("docs/console/x.png", "../b/../c.png")


def test_no_tracked_link_leaves_the_tree(index: list[tuple[str, str, str]]) -> None:
    links = [(path, obj) for mode, obj, path in index if mode == SYMLINK_MODE]
    escaping = []
    for path, obj in links:
        target = _git("cat-file", "blob", obj)
        if link_escapes(path, target):
            escaping.append(f"{path} -> {target}")
    assert escaping == [], f"tracked links that leave the tree: {escaping}"


def test_venv_is_ignored_whatever_its_type() -> None:
    """`.venv/` (with the slash) matches a directory only; a committed link slipped past."""
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", ".venv"], check=False
    )
    assert ignored.returncode == 0, ".gitignore must match `.venv` as a file or link too"


def test_developer_path_pattern() -> None:
    assert DEVELOPER_PATH.search('"code_dir": "/work/wt/issue-19"')
    assert DEVELOPER_PATH.search("see /home/alice/src/paygate")
    assert DEVELOPER_PATH.search(r"C:\Users\bob\paygate")
    assert not DEVELOPER_PATH.search("/usr/lib/postgresql/15/bin/postgres")
    assert not DEVELOPER_PATH.search("~/.cache/pip and ./work/out")


def test_no_tracked_text_names_a_developer_machine(index: list[tuple[str, str, str]]) -> None:
    found = []
    for mode, _obj, path in index:
        if mode == SYMLINK_MODE or path == os.path.relpath(__file__, ROOT):
            continue
        data = (ROOT / path).read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (screenshots)
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if DEVELOPER_PATH.search(line):
                found.append(f"{path}:{number}: {line.strip()[:120]}")
    assert found == [], "absolute paths of a developer's machine:\n" + "\n".join(found)
