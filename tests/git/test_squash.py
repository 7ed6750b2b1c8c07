"""merge_strategy = "squash" on real git: one commit per task on base, by the agent, committed
by tgflow, with the task trailer; a conflict is detected and aborted as with a merge."""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import git, make_origin, push_change, task_md, write_files

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git import worktrees
from tasks_lib.git.base import merge
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeStatus
from tgflow_cli.main import build_parser
from tgflow_cli.run_command import _config

AGENT = ("scripted agent", "agent@tgflow.invalid")


def commit(path: str, content: str, message: str) -> dict:
    return {"run": f"printf '{content}' > {path} && git add -A && git commit -qm '{message}'"}


def test_squash_lands_one_commit_for_three_agent_commits(tmp_path: Path) -> None:
    steps = [
        commit("one.txt", "1", "first"),
        commit("two.txt", "2", "second"),
        commit("three.txt", "3", "third"),
        {"sleep": 0},  # the scripted agent's own final commit: nothing left to commit
    ]
    origin = make_origin(tmp_path, {"README.md": "r\n", "tasks/s.md": task_md("s", steps=steps)})
    initial = git(origin, "rev-parse", "main")
    ws = Workspace.open(str(origin), tmp_path / "ws")
    reconcile(ws)
    task = ws.find_task("s")
    assert task is not None
    record = run_node(ws, task, ScriptedAgent(), NodeSettings(merge_strategy="squash"))

    assert record.status == NodeStatus.COMPLETED, record.reason
    first_parent = git(origin, "log", "--first-parent", "--format=%H %P|%s", f"{initial}..main")
    status, squash = first_parent.split("\n")
    assert status.endswith("|chore: update task s status to completed")
    sha, parents_subject = squash.split(" ", 1)
    assert parents_subject == f"{initial}|Task s: Task s"  # one parent: no merge commit
    assert git(origin, "rev-list", "--count", f"{initial}..main") == "2"
    tree = git(origin, "ls-tree", "-r", "--name-only", sha).split("\n")
    assert {"one.txt", "two.txt", "three.txt", "README.md"} <= set(tree)
    fmt = "%an <%ae>|%cn <%ce>|%(trailers:key=Tgflow-Task,valueonly)"
    tgflow = f"{ws.identity[0]} <{ws.identity[1]}>"
    assert git(origin, "log", "-1", f"--format={fmt}", sha) == (
        f"{AGENT[0]} <{AGENT[1]}>|{tgflow}|s"
    )


def test_squash_tree_is_the_merged_result_and_conflicts_are_aborted(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"README.md": "r\n", "shared.txt": "line\n"})
    ws = Workspace.open(str(origin), tmp_path / "ws")
    work = worktrees.start_task(ws, "t")
    for name in ("a", "b", "c"):
        write_files(work.path, {f"{name}.txt": name})
        worktrees.commit_all(ws, work.path, name)
    push_change(origin, tmp_path, "other.txt", "other\n", "someone else")
    ws.sync()  # base moved: the squash must hold both sides, as a merge would
    expected = git(ws.integration, "merge-tree", "--write-tree", "main", "tgflow/t")
    pre = ws.head()

    result = merge(ws, "t", "the task", "squash", AGENT)

    assert result.merged and result.pre_sha == pre
    assert git(ws.integration, "rev-parse", "HEAD^{tree}") == expected
    assert git(ws.integration, "rev-list", "--parents", "-1", "HEAD").split() == [
        result.sha,
        pre,
    ]
    assert git(ws.integration, "log", "-1", "--format=%B", "HEAD") == (
        "Task t: the task\n\nTgflow-Task: t"
    )

    clash = worktrees.start_task(ws, "u")
    write_files(clash.path, {"shared.txt": "mine\n"})
    worktrees.commit_all(ws, clash.path, "mine")
    push_change(origin, tmp_path, "shared.txt", "theirs\n", "theirs")
    ws.sync()
    before = ws.head()

    conflict = merge(ws, "u", "clash", "squash", AGENT)

    assert not conflict.merged and conflict.conflicts == ["shared.txt"]
    assert ws.head() == before
    assert git(ws.integration, "status", "--porcelain") == ""
    assert not (ws.integration / ".git" / "SQUASH_MSG").exists()


def test_merge_strategy_flag() -> None:
    args = build_parser().parse_args(["run", "--origin", "/o", "--merge-strategy", "squash"])
    assert _config(args).merge_strategy == "squash"
    assert _config(build_parser().parse_args(["run", "--origin", "/o"])).merge_strategy == "merge"
