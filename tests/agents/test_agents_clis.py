"""The real OpenCode (run), Claude Code and Codex CLIs against the fake model server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers.agent_helpers import (
    IDENTITY_ENV,
    git,
    require_cli,
    settings_for,
    shell_step,
    write_and_commit,
)
from helpers.fakemodel import FakeModel

from tasks_lib.agents.base import Outcome, SessionRequest
from tasks_lib.agents.process import group_alive
from tasks_lib.agents.registry import make_agent

pytest_plugins = ["helpers.agent_fixtures"]
pytestmark = pytest.mark.agents
CLIS = ["opencode", "claude", "codex"]


def request(
    wt: Path, prompt: str = "Task: demo-1\nWrite hello.txt and commit.", **kw
) -> SessionRequest:
    return SessionRequest(
        task_id="demo-1", worktree=wt, prompt=prompt, env=dict(IDENTITY_ENV),
        **{"timeout_s": 120.0, "idle_timeout_s": 30.0, **kw},
    )  # fmt: skip


@pytest.mark.parametrize("preset", CLIS)
def test_tool_calls_write_a_file_and_commit(preset: str, fake_model: FakeModel, worktree: Path):
    require_cli(preset)
    fake_model.reset(write_and_commit(preset, worktree))
    agent = make_agent(settings_for(preset, fake_model))

    result = agent.run(request(worktree))

    assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
    assert git(worktree, "log", "-1", "--format=%s") == "add hello.txt"
    assert (worktree / "hello.txt").read_text() == "hello\n"
    assert git(worktree, "status", "--porcelain") == ""
    assert fake_model.saw("Task: demo-1")  # the prompt reached the model
    assert len(fake_model.scripted_requests()) >= 3
    assert result.tokens_in and result.tokens_out
    assert not group_alive(result.pids[0])
    print(f"{preset}: one session {result.duration_s:.1f} s")


@pytest.mark.parametrize("preset", CLIS)
def test_stall_mid_stream_is_cut_by_our_idle_timeout(
    preset: str, fake_model: FakeModel, worktree: Path
):
    require_cli(preset)
    fake_model.reset([shell_step(preset, "true", stall=True)])
    agent = make_agent(settings_for(preset, fake_model))

    result = agent.run(request(worktree, idle_timeout_s=4.0))

    assert result.outcome is Outcome.STALLED, result.reason + "\n" + result.tail
    assert "no output for 4 s" in result.reason
    assert not group_alive(result.pids[0])  # nothing left behind


@pytest.mark.parametrize("preset", CLIS)
def test_a_usage_limit_ends_the_session_at_once_with_the_reset_the_provider_said(
    preset: str, fake_model: FakeModel, worktree: Path
):
    """The fake model's 429 for a minute: each CLI's report of it is read as the limit, with
    its reset (Codex says it to the minute: the end of that minute), after one request."""
    require_cli(preset)
    fake_model.reset([{"limit": 60, "text": "Done."}])
    agent = make_agent(settings_for(preset, fake_model, max_provider_retries=5))

    result = agent.run(request(worktree))

    assert result.outcome is Outcome.LIMITED, result.reason + "\n" + result.tail
    assert result.limit is not None and result.limit.reset_at is not None
    [sent] = fake_model.limits_sent
    reset = result.limit.reset_at.timestamp()
    assert reset == sent if preset != "codex" else sent <= reset <= sent + 60
    assert result.limit.provider == settings_for(preset, fake_model).base_url
    assert not group_alive(result.pids[0])


@pytest.mark.parametrize(
    ("preset", "status", "message"),
    [
        ("opencode", 500, "fake upstream overloaded"),
        ("claude", 500, "fake upstream overloaded"),
        ("codex", 400, "fake upstream overloaded"),
        ("codex", 500, "experiencing high demand"),  # Codex hides a 5xx body behind its own words
    ],
)
def test_provider_error_fails_with_the_providers_message(
    preset: str, status: int, message: str, fake_model: FakeModel, worktree: Path
):
    require_cli(preset)
    fake_model.reset([{"error": "fake upstream overloaded", "status": status}])
    # OpenCode retries for ever (2, 4, 8 s...): one retry is allowed, the second is cut.
    agent = make_agent(settings_for(preset, fake_model, max_provider_retries=1))

    result = agent.run(request(worktree))

    assert result.outcome is Outcome.FAILED, result.reason + "\n" + result.tail
    assert message in result.reason
    assert not group_alive(result.pids[0])


def test_denied_tool_is_a_failure_though_claude_exits_0(fake_model: FakeModel, worktree: Path):
    require_cli("claude")
    fake_model.reset([{"tool": "WebFetch", "args": {"url": "http://x.invalid", "prompt": "p"}}])
    agent = make_agent(settings_for("claude", fake_model))

    result = agent.run(request(worktree))

    assert result.outcome is Outcome.FAILED
    assert "permission denied for WebFetch" in result.reason


def test_cancel_stops_the_session(fake_model: FakeModel, worktree: Path):
    require_cli("codex")
    fake_model.reset([shell_step("codex", "true", stall=True)])
    agent = make_agent(settings_for("codex", fake_model))
    req = request(worktree)
    threading.Timer(2.0, req.cancel.set).start()

    started = time.monotonic()
    result = agent.run(req)

    assert result.outcome is Outcome.CANCELLED
    assert time.monotonic() - started < 15
    assert not group_alive(result.pids[0])
