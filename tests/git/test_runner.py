"""``run_git``, the one way tgflow runs git: where it runs, what it is given, how it ends."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers.gitrepos import git

from tasks_lib.git.runner import GitError, GitTimeout, run_git


def test_a_folder_that_is_gone_fails_the_command_instead_of_running_it_where_tgflow_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout an agent deleted must not make tgflow's git run in the process's own folder
    (a person's repository, when tgflow is started from one)."""
    users = tmp_path / "users-repo"
    git(tmp_path, "init", "-q", "-b", "main", str(users))
    git(users, "commit", "-q", "--allow-empty", "-m", "the person's")
    before = git(users, "rev-parse", "HEAD")
    monkeypatch.chdir(users)

    with pytest.raises(GitError, match="no such folder"):
        run_git(tmp_path / "gone", "commit", "-q", "--allow-empty", "-m", "tgflow's")

    assert git(users, "rev-parse", "HEAD") == before


def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    """A git that does not answer (a hung origin, a helper it started) is killed, children
    included, and the caller hears ``GitTimeout``."""
    marker = tmp_path / "child.pid"
    git(tmp_path, "init", "-q", str(tmp_path / "r"))
    hang = f"!sh -c 'echo $$ > {marker}; sleep 30' --"
    began = time.monotonic()
    with pytest.raises(GitTimeout):
        run_git(tmp_path / "r", "-c", f"alias.hang={hang}", "hang", timeout_s=1)
    assert time.monotonic() - began < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_input_and_exit_status_reach_the_caller(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    blob = run_git(repo, "hash-object", "-w", "--stdin", input="text\n").out
    assert git(repo, "cat-file", "blob", blob) == "text"
    missing = run_git(repo, "rev-parse", "--verify", "-q", "refs/heads/none", check=False)
    assert missing.status == 1 and missing.out == ""
    with pytest.raises(GitError, match=r"exit 128"):
        run_git(repo, "cat-file", "blob", "0" * 40)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (reaped by no one yet) is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
