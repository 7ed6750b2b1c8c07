"""The opencode-server backend: the real ``opencode serve`` against the fake model server.

One server for the whole module (as in a run: one server, many worktrees); each test gives
the fake model a new script.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
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

from tasks_lib.agents.base import Outcome, SessionRequest, SessionResult
from tasks_lib.agents.opencode import opencode_config
from tasks_lib.agents.opencode_server import NUDGE, OpenCodeServerAgent
from tasks_lib.agents.process import group_alive, kill_group
from tasks_lib.agents.settings import AgentSettings

pytest_plugins = ["helpers.agent_fixtures"]
pytestmark = pytest.mark.agents


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with pytest.MonkeyPatch.context() as mp, FakeModel() as fake:
        mp.setenv("FAKE_API_KEY", "fake-key")
        yield fake


@pytest.fixture(scope="module")
def server(fake: FakeModel) -> Iterator[OpenCodeServerAgent]:
    require_cli("opencode")
    # Tools run in the server's environment: a session's own env cannot reach them.
    settings = settings_for(
        "opencode-server", fake, max_provider_retries=1, extra_env=dict(IDENTITY_ENV)
    )
    with OpenCodeServerAgent(settings) as a:
        yield a
        pid = a.server.proc.pid if a.server.proc else None
    assert pid is None or not group_alive(pid)  # closing the backend ends the server


def run(agent: OpenCodeServerAgent, wt: Path, **kw) -> SessionResult:
    request = SessionRequest(
        task_id=wt.name, worktree=wt, prompt=f"Task: {wt.name}\nWrite and commit.",
        env=dict(IDENTITY_ENV), **{"timeout_s": 120.0, "idle_timeout_s": 30.0, **kw},
    )  # fmt: skip
    return agent.run(request)


def busy_sessions(agent: OpenCodeServerAgent, wt: Path) -> dict:
    url = agent.server.ensure()
    return httpx.get(f"{url}/session/status", params={"directory": str(wt)}).json()


def test_session_writes_a_file_and_commits(server, fake: FakeModel, worktree: Path):
    fake.reset(write_and_commit("opencode-server", worktree))

    result = run(server, worktree)

    assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
    assert git(worktree, "log", "-1", "--format=%s") == "add hello.txt"
    assert fake.saw(f"Task: {worktree.name}")
    assert result.tokens_in and result.tokens_out
    assert any("tool write completed" in line for line in result.log)
    print(f"opencode-server: one session {result.duration_s:.1f} s")


def test_two_sessions_at_once_on_one_server(server, fake: FakeModel, tmp_path: Path):
    trees = []
    for name in ("left", "right"):
        wt = tmp_path / name
        wt.mkdir()
        git(wt, "init", "-q", "-b", "main")
        git(wt, "commit", "-q", "--allow-empty", "-m", "initial")
        trees.append(wt)
    fake.reset(write_and_commit("opencode-server", trees[0]))
    results: dict[str, SessionResult] = {}
    threads = [threading.Thread(target=lambda w=wt: results.update({w.name: run(server, w)}))
               for wt in trees]  # fmt: skip

    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = time.monotonic() - started

    for wt in trees:
        assert results[wt.name].outcome is Outcome.SUCCEEDED, results[wt.name].reason
        assert git(wt, "log", "-1", "--format=%s") == "add hello.txt"
        assert fake.saw(f"Task: {wt.name}")
    assert both < sum(r.duration_s for r in results.values())  # they overlapped


@pytest.mark.serial
def test_a_stall_is_recovered_by_one_follow_up_prompt(server, fake: FakeModel, worktree: Path):
    steps = write_and_commit("opencode-server", worktree)
    fake.reset([{**steps[0], "stall": True, "times": 1}, *steps[1:]])

    result = run(server, worktree, idle_timeout_s=4.0)

    assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
    assert fake.saw(NUDGE)
    assert git(worktree, "log", "-1", "--format=%s") == "add hello.txt"


def test_a_stall_that_stays_silent_is_aborted(server, fake: FakeModel, worktree: Path):
    fake.reset([shell_step("opencode", "true", stall=True)])

    result = run(server, worktree, idle_timeout_s=3.0)

    assert result.outcome is Outcome.STALLED
    assert "also after a follow-up prompt" in result.reason
    assert busy_sessions(server, worktree) == {}  # aborted, not left busy


def test_endless_provider_retries_are_cut_with_the_providers_message(
    server, fake: FakeModel, worktree: Path
):
    fake.reset([{"error": "fake upstream overloaded", "status": 500}])

    result = run(server, worktree)

    assert result.outcome is Outcome.FAILED
    assert "fake upstream overloaded" in result.reason
    assert "retried 2x" in result.reason
    assert busy_sessions(server, worktree) == {}


def test_a_usage_limit_ends_the_session_at_once_with_the_providers_reset(
    server, fake: FakeModel, worktree: Path
):
    """OpenCode would wait for the 429's Retry-After itself, holding the session: it is
    aborted at the first retry, and the limit reported (the node waits for it, not the CLI)."""
    fake.reset([{"limit": 60, "text": "Done."}])

    result = run(server, worktree)

    assert result.outcome is Outcome.LIMITED and result.limit is not None
    assert result.limit.reset_at is not None
    assert result.limit.reset_at.timestamp() == fake.limits_sent[0]
    assert result.limit.provider == f"{fake.url}/v1"
    assert busy_sessions(server, worktree) == {}


def test_cancel_aborts_the_session(server, fake: FakeModel, worktree: Path):
    fake.reset([shell_step("opencode", "true", stall=True)])
    request = SessionRequest(task_id="c", worktree=worktree, prompt="Task: c", idle_timeout_s=60)
    threading.Timer(3.0, request.cancel.set).start()

    result = server.run(request)

    assert result.outcome is Outcome.CANCELLED
    assert busy_sessions(server, worktree) == {}


def test_a_cancel_before_the_prompt_started_still_stops_it(server, fake: FakeModel, worktree: Path):
    """The abort right after the prompt was sent comes before the server started it (it lists
    no status then, and an abort does nothing); the prompt must not start afterwards and run
    on behind the cancelled session."""
    fake.reset([shell_step("opencode", "true", stall=True)])
    request = SessionRequest(task_id="c", worktree=worktree, prompt="Task: c", idle_timeout_s=60)
    request.cancel.set()

    result = server.run(request)

    assert result.outcome is Outcome.CANCELLED
    for _ in range(15):  # long enough for a prompt left queued to have started
        assert busy_sessions(server, worktree) == {}
        time.sleep(0.2)


@pytest.mark.serial
def test_a_persons_message_reaches_the_model_in_the_sessions_next_request(
    server, fake: FakeModel, worktree: Path, tmp_path: Path
):
    gate = tmp_path / "go"  # the agent's first tool call works until the message is in
    fake.reset([shell_step("opencode", f"until [ -e {gate} ]; do sleep 0.1; done"), {"text": "ok"}])
    lines: queue.Queue[str] = queue.Queue()
    request = SessionRequest(
        task_id="m", worktree=worktree, prompt="Task: m", idle_timeout_s=60, on_line=lines.put
    )
    results: list[SessionResult] = []
    session = threading.Thread(target=lambda: results.append(server.run(request)))
    session.start()
    wait_for(lambda: fake.scripted_requests(), "the session's first model request")

    assert request.inbox.post("Also mention the README, please.")
    wait_for(lambda: "sent into the session" in lines.get(timeout=60), "the message sent")
    gate.touch()
    session.join()

    assert results[0].outcome is Outcome.SUCCEEDED, results[0].reason
    first, following = fake.scripted_requests()[0], fake.scripted_requests()[1]
    assert "Also mention the README" not in json.dumps(first["body"])
    assert "Also mention the README" in json.dumps(following["body"])


def test_a_message_after_the_session_ended_is_refused(server, fake: FakeModel, worktree: Path):
    fake.reset([{"text": "done"}])
    request = SessionRequest(task_id="m", worktree=worktree, prompt="Task: m")

    server.run(request)

    assert not request.inbox.post("too late")


def wait_for(check: Callable[[], object], what: str) -> None:
    """Until ``check`` is true (a minute at most: a hang fails, it does not block the suite)."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_safe_exit_file_written_by_the_agent(server, fake: FakeModel, worktree: Path):
    from helpers.agent_helpers import BLOCK

    fake.reset([shell_step("opencode", BLOCK), {"text": "I am blocked."}])

    result = run(server, worktree)

    assert result.outcome is Outcome.SUCCEEDED  # the pipeline, not the backend, sees Safe Exit
    assert (worktree / ".tgflow/blocked.md").read_text() == "need the API spec\n"


@pytest.mark.parametrize("answer", ["once", "reject"])
def test_a_permission_ask_is_answered_never_left_hanging(
    answer: str, fake: FakeModel, worktree: Path
):
    settings = settings_for("opencode-server", fake, permission=answer)
    config = opencode_config(settings, settings.model)
    config["permission"] = {"*": "allow", "bash": "ask"}  # a user's config that asks
    settings = settings.model_copy(
        update={"extra_env": {**IDENTITY_ENV, "OPENCODE_CONFIG_CONTENT": json.dumps(config)}}
    )
    fake.reset(write_and_commit("opencode-server", worktree))

    with OpenCodeServerAgent(settings) as agent:
        result = run(agent, worktree)

    assert any("permission bash" in line and answer in line for line in result.log)
    if answer == "once":
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        assert git(worktree, "log", "-1", "--format=%s") == "add hello.txt"
    else:
        assert result.outcome is Outcome.FAILED
        assert "permission denied for bash" in result.reason


def test_server_dying_mid_session_fails_the_session_with_its_output(fake: FakeModel, worktree):
    fake.reset([shell_step("opencode", "true", stall=True)])
    agent = OpenCodeServerAgent(settings_for("opencode-server", fake))
    agent.server.ensure()
    assert agent.server.proc is not None
    threading.Timer(3.0, kill_group, args=(agent.server.proc.pid,)).start()

    result = run(agent, worktree, idle_timeout_s=60.0)
    agent.close()

    assert result.outcome is Outcome.FAILED
    assert "opencode serve exited during the session" in result.reason


def test_a_server_that_will_not_start_fails_the_session_without_hanging(
    tmp_path: Path, worktree: Path, monkeypatch: pytest.MonkeyPatch
):
    broken = tmp_path / "opencode"
    broken.write_text("#!/bin/sh\necho 'config error: no such provider'\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr("tasks_lib.agents.opencode_server.find_cli", lambda name: str(broken))
    agent = OpenCodeServerAgent(AgentSettings(preset="opencode-server"))
    results: list[SessionResult] = []
    thread = threading.Thread(target=lambda: results.append(run(agent, worktree)), daemon=True)

    thread.start()
    thread.join(20)

    assert results, "the session hung on a server that exited at start"
    assert results[0].outcome is Outcome.FAILED
    assert "did not start" in results[0].reason
    assert "config error: no such provider" in results[0].reason
    agent.close()


def test_a_dead_server_is_started_anew_for_the_next_session(fake: FakeModel, worktree: Path):
    agent = OpenCodeServerAgent(settings_for("opencode-server", fake, extra_env=IDENTITY_ENV))
    with agent:
        agent.server.ensure()
        assert agent.server.proc is not None
        dead = agent.server.proc.pid
        kill_group(dead)
        agent.server.proc.wait(5)
        fake.reset(write_and_commit("opencode-server", worktree))

        result = run(agent, worktree)

        assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
        assert agent.server.proc is not None and agent.server.proc.pid != dead


def test_a_subagents_permission_ask_is_answered_and_its_work_is_not_a_stall(tmp_path: Path):
    """The task tool runs a child session: its asks would hang the parent, its events are work."""
    import queue

    from tasks_lib.agents.opencode_server import _Session

    replies: list[str] = []

    def api_handler(req: httpx.Request) -> httpx.Response:
        replies.append(f"{req.method} {req.url.path}")
        return httpx.Response(200, json=True)

    def ev(kind: str, **props) -> dict:
        return {"type": kind, "properties": props}

    events: queue.Queue = queue.Queue()
    for event in (
        ev("session.status", sessionID="ses_p", status={"type": "busy"}),
        ev("session.created", info={"id": "ses_c", "parentID": "ses_p"}),
        ev("session.created", info={"id": "ses_g", "parentID": "ses_c"}),
        ev("session.created", info={"id": "ses_other"}),
        ev("permission.asked", id="per_other", sessionID="ses_other", permission="bash"),
        ev("session.status", sessionID="ses_c", status={"type": "busy"}),
        ev("permission.asked", id="per_c", sessionID="ses_c", permission="bash"),
        ev("permission.asked", id="per_g", sessionID="ses_g", permission="edit"),
        ev("session.idle", sessionID="ses_c"),  # the child's idle is not the parent's
    ):
        events.put(event)
    request = SessionRequest(task_id="t", worktree=tmp_path, prompt="p", idle_timeout_s=1.5)
    agent = OpenCodeServerAgent(AgentSettings(preset="opencode-server"))
    session = _Session(id="ses_p")

    def later() -> None:  # the child works for longer than the idle limit, then the parent ends
        for _ in range(4):
            time.sleep(0.5)
            events.put(ev("message.part.updated", part={"sessionID": "ses_c", "type": "text"}))
        events.put(ev("session.idle", sessionID="ses_p"))

    threading.Thread(target=later, daemon=True).start()
    with httpx.Client(base_url="http://x", transport=httpx.MockTransport(api_handler)) as api:
        outcome = agent._follow_session(api, session, events, request, time.monotonic())

    assert outcome == (None, "")
    assert "POST /permission/per_c/reply" in replies
    assert "POST /permission/per_g/reply" in replies
    assert not any("per_other" in r for r in replies)
    assert not any("abort" in r for r in replies)  # no stall: the child was working


def test_no_server_is_started_once_the_runs_agents_are_closed(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
):
    """A node that starts after the run was cancelled must not start a server nobody stops."""
    from tasks_lib.agents.registry import AgentPool

    started: list[str] = []
    monkeypatch.setattr("tasks_lib.agents.opencode_server.find_cli", started.append)
    settings = AgentSettings(preset="opencode-server")
    pool = AgentPool()
    used = pool.get(settings)
    pool.close()

    for agent in (used, pool.get(settings)):
        result = run(agent, worktree)
        assert result.outcome is Outcome.FAILED
        assert "closed" in result.reason
    assert started == []
