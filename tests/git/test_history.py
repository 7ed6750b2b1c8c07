"""A branch read from its objects (``history``) answers exactly as ``git log`` and ``git diff``
do, and leaves to git every branch that is not base plus a line of commits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.gitrepos import git
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib.git import history

ME = ["-c", "user.name=T", "-c", "user.email=t@example.invalid"]
NAMES = ["a.txt", "b", "dir/c.txt", "dir/sub/d", "dir", "é.txt", " lead", "x y/z", "mod/e"]
MESSAGES = [
    "one line",
    "title\n\nbody",
    "two\nline title\n\nbody",
    "\n\n  leading blank lines\n",
    "trailing spaces   \n\nbody",
    "tabs\there\t\n",
    "ünï cödé",
    "",
]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "delete", "chmod", "link"]),
        st.sampled_from(NAMES),
        st.integers(0, 3),
        st.sampled_from(MESSAGES),
    ),
    min_size=1,
    max_size=6,
)


def _repo(path: Path) -> str:
    git(path.parent, "init", "-q", "-b", "main", str(path))
    (path / "a.txt").write_text("base\n")
    (path / "dir").mkdir()
    (path / "dir" / "c.txt").write_text("c\n")
    git(path, "add", "-A")
    git(path, *ME, "commit", "-qm", "base")
    return git(path, "rev-parse", "HEAD")


def _apply(repo: Path, step: tuple[str, str, int, str]) -> None:
    """One change to the work tree, whatever is at that path now (a file, a folder)."""
    kind, name, n, _ = step
    target = repo / name
    if kind == "delete" or target.is_dir() or any(_leaf(p) for p in target.parents):
        for p in [target, *target.parents]:
            if p == repo:
                break
            if _leaf(p):
                p.unlink()
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        if kind == "delete":
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link":
        target.unlink(missing_ok=True)
        target.symlink_to(f"to-{n}")
    else:
        if target.is_symlink():
            target.unlink()
        target.write_text(f"{name} {n}\n")
        if kind == "chmod":
            os.chmod(target, 0o755 if n % 2 else 0o644)


def _leaf(path: Path) -> bool:
    """A file or a link (the links made here lead nowhere): no folder can be made through it."""
    return path.is_symlink() or path.is_file()


def _commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, *ME, "commit", "-q", "--allow-empty", "--allow-empty-message", "-m", message)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_a_line_of_commits_reads_as_git_log_and_diff_say(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, str, int, str]]
) -> None:
    repo = tmp_path_factory.mktemp("h") / "repo"
    base = _repo(repo)
    for step in steps:
        _apply(repo, step)
        _commit(repo, step[3])
    tip = git(repo, "rev-parse", "HEAD")

    line = history.line_on(repo, base, tip)
    logged = git(repo, "log", "--reverse", "--format=%H%x00%s%x01", f"{base}..{tip}")
    by_git = [tuple(x.lstrip("\n").split("\0")) for x in logged.split("\x01") if x.strip("\n")]
    assert line is not None
    assert [(c.sha, c.subject) for c in line] == by_git
    diffed = subprocess.run(  # unstripped: a name may begin with a space
        ["git", "diff", "--no-renames", "--name-only", "-z", base, tip],
        cwd=repo, capture_output=True, check=True,
    ).stdout  # fmt: skip
    names = [p.decode("utf-8", "surrogateescape") for p in diffed.split(b"\0") if p]
    base_tree, tip_tree = git(repo, "rev-parse", f"{base}^{{tree}}", f"{tip}^{{tree}}").split()
    assert history.files_between(repo, base_tree, tip_tree) == names


def test_a_merge_on_the_branch_or_a_base_moved_since_is_left_to_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    base = _repo(repo)
    assert history.line_on(repo, base, base) == ()
    git(repo, "switch", "-q", "-c", "task")
    _apply(repo, ("write", "b", 1, ""))
    _commit(repo, "task work")
    task = git(repo, "rev-parse", "HEAD")
    assert history.line_on(repo, base, task) is not None

    git(repo, "switch", "-q", "main")
    _apply(repo, ("write", "mod/e", 1, ""))
    _commit(repo, "main moved")
    moved = git(repo, "rev-parse", "HEAD")
    assert history.line_on(repo, moved, task) is None  # base is not on the branch's line
    git(repo, "switch", "-q", "task")
    git(repo, *ME, "merge", "-q", "--no-edit", "main")
    assert history.line_on(repo, moved, git(repo, "rev-parse", "HEAD")) is None  # a merge
