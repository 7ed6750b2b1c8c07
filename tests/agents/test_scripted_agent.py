"""The scripted demo agent, run for real: a subprocess in a git worktree, driven by its prompt."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tasks_lib.agents.base import Outcome, SessionRequest, SessionResult
from tasks_lib.agents.process import pid_alive
from tasks_lib.agents.scripted import ScriptedAgent, keep_both

ME = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
NO_GLOBAL_IDENTITY = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *ME, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("demo\n")
    (repo / "tasks").mkdir()
    (repo / "tasks" / "t.md").write_text("---\nid: demo/task\nname: T\n---\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def prompt(script: str, *, attempt: int = 1) -> str:
    return (
        "# Task: T\n\nTask: demo/task\nTask file: tasks/t.md\n"
        f"Attempt: {attempt}\n\n## Description\n\nDo it.\n\n```tgflow-script\n{script}```\n"
    )


def run(repo: Path, text: str, **kw: object) -> tuple[SessionResult, list[str]]:
    seen: list[str] = []
    request = SessionRequest(
        task_id="demo/task", worktree=repo, prompt=text, on_line=seen.append, **kw
    )
    return ScriptedAgent().run(request), seen


def test_runs_the_steps_and_commits_everything_but_tgflow_files(repo: Path) -> None:
    script = """\
- write: {path: calc/ops.py, content: "def add(a, b):\\n    return a + b\\n"}
- append: {path: README.md, text: "more\\n"}
- replace: {path: calc/ops.py, old: "a + b", new: "b + a"}
- run: "echo ran > ran.txt"
- write: {path: .tgflow/scratch.md, content: "agent notes"}
- commit: add ops
"""
    result, seen = run(repo, prompt(script), env=NO_GLOBAL_IDENTITY)

    assert result.outcome is Outcome.SUCCEEDED, result.tail
    assert "scripted: write calc/ops.py" in seen
    assert seen == result.log
    assert git(repo, "log", "-1", "--format=%s|%an").strip() == (
        "demo/task: add ops|tgflow scripted agent"
    )
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(committed) == ["README.md", "calc/ops.py", "ran.txt"]
    assert git(repo, "show", "HEAD:calc/ops.py") == "def add(a, b):\n    return b + a\n"
    assert git(repo, "status", "--porcelain").strip() == "?? .tgflow/"


def test_uses_the_repository_identity_when_it_has_one(repo: Path) -> None:
    subprocess.run(["git", "config", "user.name", "Repo Owner"], cwd=repo, check=True)
    subprocess.run(["git", "config", "user.email", "owner@example.invalid"], cwd=repo, check=True)
    result, _ = run(repo, prompt("- write: {path: a.txt, content: a}\n"))
    assert result.outcome is Outcome.SUCCEEDED, result.tail
    assert (
        git(repo, "log", "-1", "--format=%an %s").strip()
        == "Repo Owner demo/task: scripted changes"
    )


def test_block_writes_the_safe_exit_file_and_commits_nothing(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    script = '- write: {path: half.py, content: "x = 1\\n"}\n- block: "needs an API key"\n'
    result, _ = run(repo, prompt(script))

    assert result.outcome is Outcome.SUCCEEDED  # the pipeline, not the backend, sees blocked.md
    assert (repo / ".tgflow" / "blocked.md").read_text() == "needs an API key\n"
    assert git(repo, "rev-parse", "HEAD") == head
    assert "blocked (Safe Exit): needs an API key" in result.tail


def test_fail_attempts_fails_the_first_attempt_and_succeeds_the_second(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    script = "- fail_attempts: 1\n- write: {path: ok.txt, content: ok}\n"

    first, _ = run(repo, prompt(script, attempt=1))
    assert first.outcome is Outcome.FAILED
    assert "failing as scripted on attempt 1" in first.reason
    assert git(repo, "rev-parse", "HEAD") == head

    second, _ = run(repo, prompt(script, attempt=2))
    assert second.outcome is Outcome.SUCCEEDED, second.tail
    assert git(repo, "show", "HEAD:ok.txt") == "ok"


def test_hang_is_killed_by_the_idle_timeout_with_its_whole_process_group(repo: Path) -> None:
    result, seen = run(repo, prompt("- hang: true\n"), idle_timeout_s=1.5, timeout_s=60)

    assert result.outcome is Outcome.STALLED
    hanging = next(line for line in seen if "hanging" in line)
    pids = [int(p) for p in re.findall(r"pid (\d+)", hanging)]
    assert len(pids) == 2 and pids[0] == result.pids[0]
    assert not any(pid_alive(pid) for pid in pids), f"left running: {pids}"
    assert result.duration_s < 15


def test_touch_task_file_and_no_commit_leave_work_for_the_orchestrator(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    script = "- touch_task_file: true\n- write: {path: new.py, content: ''}\n- no_commit: true\n"
    result, _ = run(repo, prompt(script))

    assert result.outcome is Outcome.SUCCEEDED, result.tail
    assert git(repo, "rev-parse", "HEAD") == head
    assert "scripted agent" in (repo / "tasks" / "t.md").read_text()
    assert sorted(git(repo, "status", "--porcelain").splitlines()) == [" M tasks/t.md", "?? new.py"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Task: demo/task\nAttempt: 1\nPlease improve things.\n", "no ```tgflow-script block"),
        (prompt("- explode: now\n"), "not a valid list of steps"),
        (prompt("- write: {path: ../outside.txt, content: x}\n"), "outside the worktree"),
        (prompt("- replace: {path: README.md, old: absent, new: x}\n"), "text not found"),
        (prompt("- run: 'exit 3'\n"), "exit code 3"),
    ],
)
def test_bad_or_impossible_instructions_fail_with_a_clear_reason(
    repo: Path, text: str, expected: str
) -> None:
    result, _ = run(repo, text)
    assert result.outcome is Outcome.FAILED
    assert expected in result.reason
    assert not (repo.parent / "outside.txt").exists()


def test_resolves_a_real_merge_conflict_by_keeping_both_sides(repo: Path) -> None:
    (repo / "shared.py").write_text("names = []\n")
    git(repo, "add", "shared.py")
    git(repo, "commit", "-q", "-m", "shared")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "shared.py").write_text("names = []\nnames += ['feature']\n")
    git(repo, "commit", "-q", "-am", "feature")
    git(repo, "checkout", "-q", "main")
    (repo / "shared.py").write_text("names = []\nnames += ['main']\n")
    git(repo, "commit", "-q", "-am", "main")
    git(repo, "checkout", "-q", "feature")
    merge = subprocess.run(["git", *ME, "merge", "main"], cwd=repo, capture_output=True)
    assert merge.returncode != 0  # a real conflict, merge in progress

    text = prompt("- fail: the script must be ignored\n") + (
        "\n## Resolve merge conflicts\n\nmain was merged into your branch; conflicts in:\n"
        "- shared.py\n"
    )
    result, seen = run(repo, text, env=NO_GLOBAL_IDENTITY)

    assert result.outcome is Outcome.SUCCEEDED, result.tail
    assert "scripted: resolved shared.py (kept both sides)" in seen
    assert (
        repo / "shared.py"
    ).read_text() == "names = []\nnames += ['feature']\nnames += ['main']\n"
    parents = git(repo, "log", "-1", "--format=%P").split()
    assert len(parents) == 2
    assert git(repo, "status", "--porcelain").strip() == ""


def test_keep_both_drops_a_diff3_base_section() -> None:
    text = "a\n<<<<<<< HEAD\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> main\nz\n"
    assert keep_both(text) == "a\nours\ntheirs\nz\n"
