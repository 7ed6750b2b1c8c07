"""Running a failed task again: its kept branch goes back to the agent, a branch deleted on the
origin stays deleted, and ``tgflow reset`` / ``RunConfig.reset`` start it afresh from main.

Every scenario: the agent's first try does not meet the acceptance (validation fails), the
maintainer fixes the task file on the origin's main, and a new run (no retries) goes on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepos import branches, git, log, make_origin, push_change, show, task_md

from tasks_lib.agents.base import SessionRequest, SessionResult
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Status, Task, parse_task
from tasks_lib.run.config import NodeSettings, RunConfig
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus
from tgflow_cli.main import main

CHECK = "grep -qx 42 answer.txt"
SETTINGS = NodeSettings(validate_commands=[CHECK])


class RecordingAgent(ScriptedAgent):
    """The scripted agent, keeping every prompt it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def run(self, request: SessionRequest) -> SessionResult:
        self.prompts.append(request.prompt)
        return super().run(request)


def answer(value: str) -> list[dict]:
    return [{"write": {"path": "answer.txt", "content": f"{value}\n"}}]


def failed_once(tmp_path: Path) -> tuple[Path, str]:
    """An origin whose task x failed validation in a first run; x's kept tip."""
    origin = make_origin(
        tmp_path, {"README.md": "r\n", "tasks/x.md": task_md("x", steps=answer("41"))}
    )
    first = node(Workspace.open(str(origin), tmp_path / "ws"), RecordingAgent())
    assert first.status == NodeStatus.FAILED and first.cause == Cause.VALIDATION, first.reason
    assert task_on(origin).status == Status.FAILED
    assert branches(origin) == ["tgflow/x"]
    return origin, git(origin, "rev-parse", "tgflow/x")


def fix_task(origin: Path, tmp_path: Path) -> None:
    """The maintainer changes the task's script on main so that the agent gets it right."""
    text = show(origin, "tasks/x.md").replace("41", "42")
    push_change(origin, tmp_path, "tasks/x.md", text + "\n", "fix task x")


def node(ws: Workspace, agent: RecordingAgent) -> NodeRecord:
    reconcile(ws)  # each call is a new run
    task = ws.find_task("x")
    assert task is not None
    return run_node(ws, task, agent, SETTINGS)  # retries 0: every attempt is the final one


def task_on(origin: Path) -> Task:
    task, problems, _ = parse_task(show(origin, "tasks/x.md"), Path("tasks/x.md"))
    assert task is not None, problems
    return task


def on_main(origin: Path, sha: str) -> bool:
    return git(origin, "rev-list", "main").split().count(sha) == 1


def test_a_failed_node_goes_back_to_the_agent_on_its_kept_branch_and_merges(
    tmp_path: Path,
) -> None:
    origin, kept = failed_once(tmp_path)
    fix_task(origin, tmp_path)
    agent = RecordingAgent()

    second = node(Workspace.open(str(origin), tmp_path / "ws"), agent)

    assert second.status == NodeStatus.COMPLETED, second.reason
    assert second.sessions == 1 and len(agent.prompts) == 1
    prompt = agent.prompts[0]
    assert "## Work already on this branch" in prompt
    assert f"{kept[:7]} x: scripted changes" in prompt  # what the branch holds
    assert "validation on the task branch failed" in prompt  # why the last run failed
    assert f"`{CHECK}`" in prompt or f"\n{CHECK}\n" in prompt
    assert show(origin, "answer.txt") == "42"
    assert on_main(origin, kept)  # built on the kept work, not started over
    assert log(origin).count("x: scripted changes") == 2
    assert task_on(origin).status == Status.COMPLETED
    assert branches(origin) == []


def test_a_branch_deleted_on_the_origin_stays_deleted(tmp_path: Path) -> None:
    origin, kept = failed_once(tmp_path)
    git(origin, "branch", "-D", "tgflow/x")  # the maintainer throws that attempt away
    fix_task(origin, tmp_path)

    ws = Workspace.open(str(origin), tmp_path / "ws")
    report = reconcile(ws)
    assert "tgflow/x" not in report.resumable
    assert branches(ws.integration) == [] and branches(origin) == []
    dropped = git(ws.integration, "for-each-ref", "--format=%(objectname)", "refs/tgflow/dropped/")
    assert dropped == kept  # kept in tgflow's clone, outside refs/heads

    agent = RecordingAgent()
    second = node(ws, agent)

    assert second.status == NodeStatus.COMPLETED, second.reason
    assert "## Work already on this branch" not in agent.prompts[0]
    assert not on_main(origin, kept)
    assert branches(origin) == []


def test_tgflow_reset_moves_the_branch_aside_on_the_origin_and_the_next_run_starts_from_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin, kept = failed_once(tmp_path)
    fix_task(origin, tmp_path)

    code = main(["reset", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), "x"])

    out = capsys.readouterr().out
    assert code == 0, out
    ref, sha = git(
        origin, "for-each-ref", "--format=%(refname) %(objectname)", "refs/tgflow/backup/"
    ).split()
    assert ref.startswith("refs/tgflow/backup/x/") and sha == kept
    assert ref in out
    assert branches(origin) == []
    assert branches(tmp_path / "ws" / "integration") == []

    agent = RecordingAgent()
    second = node(Workspace.open(str(origin), tmp_path / "ws"), agent)

    assert second.status == NodeStatus.COMPLETED, second.reason
    assert "## Work already on this branch" not in agent.prompts[0]
    assert not on_main(origin, kept)
    assert git(origin, "merge-base", "--is-ancestor", kept, ref) == ""  # still reachable


def test_tgflow_reset_of_a_task_without_a_kept_branch_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(tmp_path, {"tasks/x.md": task_md("x", steps=answer("42"))})
    code = main(["reset", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), "x"])
    assert code == 0
    assert "x: no kept branch" in capsys.readouterr().out
    assert git(origin, "for-each-ref", "refs/tgflow/") == ""


@pytest.mark.prefect
def test_the_flow_reruns_kept_work_and_resets_what_it_is_told_to(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.graph_flow import tgflow_run

    bad = [{"write": {"path": "BAD", "content": "no\n"}}]
    origin = make_origin(
        tmp_path,
        {
            "tasks/x.md": task_md("x", steps=[*bad, {"write": {"path": "x.txt", "content": "1"}}]),
            "tasks/y.md": task_md("y", steps=[*bad, {"write": {"path": "y.txt", "content": "1"}}]),
        },
    )
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        retries=0,
        validate_commands=["test ! -e BAD"],
        workspace_root=str(tmp_path / "ws"),
    )
    assert tgflow_run(config, return_state=True).is_failed()
    kept = {t: git(origin, "rev-parse", f"tgflow/{t}") for t in "xy"}
    # x's fix removes what its first try left; y's fix alone would fail on its kept branch.
    for t, steps in (("x", [{"run": "rm -f BAD"}]), ("y", [])):
        fixed = task_md(t, steps=[*steps, {"write": {"path": f"{t}.txt", "content": "2"}}])
        push_change(origin, tmp_path, f"tasks/{t}.md", fixed, f"fix {t}")

    state = tgflow_run(config.model_copy(update={"reset": ["y"]}), return_state=True)

    assert state.is_completed(), state.message
    assert show(origin, "x.txt") == "2" and show(origin, "y.txt") == "2"
    assert on_main(origin, kept["x"]) and not on_main(origin, kept["y"])
    backups = git(origin, "for-each-ref", "--format=%(objectname)", "refs/tgflow/backup/y/")
    assert backups == kept["y"]
    assert branches(origin) == []


def test_a_run_without_push_refuses_to_reset(prefect_server: str, tmp_path: Path) -> None:
    from flows.graph_flow import tgflow_run

    origin = make_origin(tmp_path, {"tasks/x.md": task_md("x", steps=answer("42"))})
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        validate_commands=["true"],
        push=False,
        reset=["x"],
        workspace_root=str(tmp_path / "ws"),
    )
    state = tgflow_run(config, return_state=True)
    message = state.message or ""
    assert state.is_failed() and "nothing was run" in message
    assert "reset x: needs push" in message
