"""The generic command backend, run for real."""

from __future__ import annotations

import sys
from pathlib import Path

from tasks_lib.agents.base import Outcome, SessionRequest
from tasks_lib.agents.command import CommandAgent

SHOW = (
    "import os, sys; print('cwd', os.getcwd()); print('pwd', os.environ['PWD']);"
    "print('file', sys.argv[1]); print('text', open(sys.argv[1]).read());"
    "print('args', sys.argv[2:]); print('extra', os.environ.get('EXTRA'))"
)


def request(tmp_path: Path, **kwargs) -> SessionRequest:
    worktree = tmp_path / "wt"
    worktree.mkdir(exist_ok=True)
    return SessionRequest(task_id="a/b", worktree=worktree, prompt="do {it}", **kwargs)


def test_placeholders_env_and_prompt_file_outside_the_worktree(tmp_path: Path) -> None:
    agent = CommandAgent(
        [sys.executable, "-c", SHOW, "{prompt_file}", "{task_id}", "{worktree}", "{prompt}"],
        env={"EXTRA": "yes"},
    )
    result = agent.run(request(tmp_path))
    out = dict(line.split(" ", 1) for line in result.log)
    worktree = str(tmp_path / "wt")
    assert result.outcome == Outcome.SUCCEEDED
    assert out["cwd"] == worktree and out["pwd"] == worktree
    assert out["text"] == "do {it}"
    assert out["args"] == repr(["a/b", worktree, "do {it}"])
    assert out["extra"] == "yes"
    assert not out["file"].startswith(worktree)
    assert not Path(out["file"]).exists()  # removed after the session


def test_failure_and_stall_become_outcomes(tmp_path: Path) -> None:
    failed = CommandAgent("bash -c 'echo trying; exit 4'").run(request(tmp_path))
    assert failed.outcome == Outcome.FAILED and "exit code 4" in failed.reason
    assert "trying" in failed.reason

    stalled = CommandAgent(["bash", "-c", "echo start; sleep 30"]).run(
        request(tmp_path, idle_timeout_s=0.5)
    )
    assert stalled.outcome == Outcome.STALLED and stalled.duration_s < 10
