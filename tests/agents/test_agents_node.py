"""Nodes run end to end through the pipeline with REAL agent CLIs and the fake model.

A bare origin, tgflow's workspace clone, ``run_node``: the agent's commits are validated,
merged and pushed; the request log shows the prompt built from the task file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.agent_helpers import (
    BLOCK,
    COMMIT,
    require_cli,
    settings_for,
    shell_step,
    write_and_commit,
)
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show

from tasks_lib.agents.base import Agent, SessionRequest, SessionResult
from tasks_lib.agents.opencode_server import OpenCodeServerAgent
from tasks_lib.agents.process import group_alive
from tasks_lib.agents.registry import make_agent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus

pytestmark = pytest.mark.agents
PRESETS = ["opencode-server", "opencode", "claude", "codex"]
SETTINGS = NodeSettings(validate_commands=["test -f hello.txt"], idle_timeout_s=30.0)


def task_file(task_id: str, depends_on: tuple[str, ...] = ()) -> str:
    deps = f"depends_on: [{', '.join(depends_on)}]\n" if depends_on else ""
    return (
        f"---\nid: {task_id}\nname: Greeting {task_id}\nstatus: pending\n{deps}---\n\n"
        f"## Description\n\nGreet the world from task {task_id} in hello.txt.\n\n"
        "## Acceptance Criteria\n\n- [ ] hello.txt exists\n"
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel() as fake:
        yield fake


def workspace(tmp_path: Path, tasks: dict[str, str]) -> tuple[Workspace, Path]:
    origin = make_origin(tmp_path, {"README.md": "demo\n", **tasks})
    return Workspace.open(str(origin), tmp_path / "ws"), origin


def run(ws: Workspace, task_id: str, agent: Agent, settings: NodeSettings = SETTINGS) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, agent, settings)


def agent_for(preset: str, fake: FakeModel, **extra) -> Agent:
    require_cli("opencode" if preset == "opencode-server" else preset)
    return make_agent(settings_for(preset, fake, **extra))


def server_for(fake: FakeModel, **extra) -> OpenCodeServerAgent:
    require_cli("opencode")
    return OpenCodeServerAgent(settings_for("opencode-server", fake, **extra))


class PidsSeen(Agent):
    """Wraps a backend to keep the pids of its sessions (to check none is left)."""

    def __init__(self, agent: Agent) -> None:
        self.agent, self.name, self.model, self.pids = agent, agent.name, agent.model, list[int]()

    def run(self, request: SessionRequest) -> SessionResult:
        result = self.agent.run(request)
        self.pids += result.pids
        return result


def script(preset: str, name: str = "hello.txt") -> list[dict]:
    if preset == "claude":  # Write wants an absolute path, unknown before the node starts
        return [
            shell_step(preset, f"printf 'hello\\n' > {name}"),
            shell_step(preset, COMMIT.replace("hello.txt", name)),
            {"text": "Done."},
        ]
    return write_and_commit(preset, Path("."), name)


@pytest.mark.parametrize("preset", PRESETS)
def test_node_runs_to_merged_main_with_a_real_agent(preset: str, fake: FakeModel, tmp_path: Path):
    ws, origin = workspace(tmp_path, {"tasks/hello.md": task_file("hello")})
    fake.reset(script(preset))
    agent = agent_for(preset, fake)
    try:
        record = run(ws, "hello", agent)
    finally:
        if isinstance(agent, OpenCodeServerAgent):
            agent.close()

    assert record.status is NodeStatus.COMPLETED, record.reason
    assert show(origin, "hello.txt") == "hello"
    assert "status: completed" in show(origin, "tasks/hello.md")
    assert fake.saw("Greet the world from task hello in hello.txt.")  # the task's Description
    assert fake.saw("Task: hello")
    assert record.tokens_in and record.sessions == 1
    print(f"{preset}: node {record.duration_s:.1f} s, agent {record.agent_seconds:.1f} s")


def test_safe_exit_through_a_real_agent_ends_blocked(fake: FakeModel, tmp_path: Path):
    ws, _ = workspace(tmp_path, {"tasks/hello.md": task_file("hello")})
    fake.reset([shell_step("opencode", BLOCK), {"text": "Blocked: see .tgflow/blocked.md"}])

    record = run(ws, "hello", agent_for("opencode", fake))

    assert record.status is NodeStatus.BLOCKED
    assert record.reason == "need the API spec"


def test_stall_ends_the_node_stalled_and_leaves_no_process(fake: FakeModel, tmp_path: Path):
    ws, _ = workspace(tmp_path, {"tasks/hello.md": task_file("hello")})
    fake.reset([shell_step("claude", "true", stall=True)])
    agent = PidsSeen(agent_for("claude", fake))

    record = run(ws, "hello", agent, SETTINGS.model_copy(update={"idle_timeout_s": 4.0}))

    assert record.status is NodeStatus.STALLED
    assert "no output for 4 s" in record.reason
    assert agent.pids and not any(group_alive(pid) for pid in agent.pids)


def test_provider_errors_fail_the_node_with_the_providers_message(fake: FakeModel, tmp_path: Path):
    ws, _ = workspace(tmp_path, {"tasks/hello.md": task_file("hello")})
    fake.reset([{"error": "fake upstream overloaded", "status": 500}])

    with server_for(fake, max_provider_retries=1) as agent:
        record = run(ws, "hello", agent)

    assert record.status is NodeStatus.FAILED
    assert "fake upstream overloaded" in record.reason


def test_three_node_graph_on_one_server_two_sessions_at_once(fake: FakeModel, tmp_path: Path):
    tasks = {
        "tasks/a.md": task_file("a"),
        "tasks/b.md": task_file("b"),
        "tasks/c.md": task_file("c", depends_on=("a", "b")),
    }
    ws, origin = workspace(tmp_path, tasks)
    settings = NodeSettings(idle_timeout_s=30.0)
    records: dict[str, NodeRecord] = {}
    with server_for(fake) as agent:
        # a and b are independent: both sessions run at once on the one server (the first
        # model request of each is answered only once both have arrived, or after a minute).
        first, *rest = script("opencode", "shared.txt")
        fake.reset([{**first, "meet": 2}, *rest])
        threads = [
            threading.Thread(target=lambda t=t: records.update({t: run(ws, t, agent, settings)}))
            for t in ("a", "b")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first_two = list(fake.scripted_requests())
        fake.reset(script("opencode", "c.txt"))
        records["c"] = run(ws, "c", agent, settings)

    assert {t: r.status for t, r in records.items()} == {t: NodeStatus.COMPLETED for t in "abc"}
    a_times = [r["time"] for r in first_two if "Task: a" in str(r["body"])]
    b_times = [r["time"] for r in first_two if "Task: b" in str(r["body"])]
    assert min(a_times) < max(b_times) and min(b_times) < max(a_times)  # overlapped
    assert show(origin, "c.txt") == "hello"
    for t in "abc":
        assert "status: completed" in show(origin, f"tasks/{t}.md")
