"""The clone's one ref writer (``runner.RefWriter``) changes refs as ``git update-ref --stdin``
would at that moment: each transaction checks the refs as they are on disk then, never as
the process saw them before, and one git refuses changes nothing and leaves the writer
usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.gitrepos import git

from tasks_lib.git.runner import GitError, RefWriter

ME = {"GIT_COMMITTER_NAME": "tgflow", "GIT_COMMITTER_EMAIL": "tgflow@example.invalid"}


def _repo(path: Path) -> tuple[str, str]:
    git(path.parent, "init", "-q", "-b", "main", str(path))
    for n in ("one", "two"):
        (path / "a.txt").write_text(f"{n}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", n)
    return git(path, "rev-parse", "HEAD~1"), git(path, "rev-parse", "HEAD")


def _ref(repo: Path, ref: str) -> str | None:
    out = git(repo, "for-each-ref", "--format=%(objectname)", ref)
    return out or None


def test_transactions_see_what_others_did_since(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first, second = _repo(repo)
    writer = RefWriter(repo, ME)
    writer.transaction([f"update refs/tgflow/x {first}"])
    assert _ref(repo, "refs/tgflow/x") == first

    git(repo, "update-ref", "refs/tgflow/x", second)  # another command moves it
    git(repo, "pack-refs", "--all")  # and packs it
    writer.transaction([f"update refs/tgflow/x {first} {second}"])  # from where it is now
    assert _ref(repo, "refs/tgflow/x") == first

    git(repo, "pack-refs", "--all")
    writer.transaction(["delete refs/tgflow/x", f"update refs/heads/y {second}"])
    assert _ref(repo, "refs/tgflow/x") is None and _ref(repo, "refs/heads/y") == second
    reflog = git(repo, "log", "-g", "--format=%gn", "refs/heads/y")
    assert reflog == "tgflow"  # the writer's identity, as tgflow's commands have
    writer.close()


def test_a_refused_transaction_changes_nothing_says_why_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    first, second = _repo(repo)
    writer = RefWriter(repo, ME)
    writer.transaction([f"update refs/tgflow/x {first}"])

    with pytest.raises(GitError, match="refs/tgflow/x"):  # moved from where the caller read it
        writer.transaction(
            [f"update refs/tgflow/y {second}", f"update refs/tgflow/x {second} {second}"]
        )
    assert _ref(repo, "refs/tgflow/y") is None and _ref(repo, "refs/tgflow/x") == first

    with pytest.raises(GitError, match="invalid ref format"):
        writer.transaction([f"update refs/heads/bad..name {second}"])
    with pytest.raises(ValueError):
        writer.transaction([f"update refs/tgflow/z {second}\ndelete refs/tgflow/x"])

    writer.transaction([f"update refs/tgflow/x {second} {first}"])
    assert _ref(repo, "refs/tgflow/x") == second
    writer.close()


def test_a_writer_that_died_or_whose_repository_was_made_again_is_replaced(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    first, _ = _repo(repo)
    writer = RefWriter(repo, ME)
    writer.transaction([f"update refs/tgflow/x {first}"])
    assert writer._proc is not None
    writer._proc.kill()
    writer._proc.wait()
    writer.transaction(["delete refs/tgflow/x"])
    assert _ref(repo, "refs/tgflow/x") is None

    shutil.rmtree(repo)  # a person deletes the clone; a new one is made at its path
    again, _ = _repo(repo)
    writer.transaction([f"update refs/tgflow/x {again}"])
    assert _ref(repo, "refs/tgflow/x") == again
    writer.close()
