"""Faults of the git layer: an agent is untrusted code in a worktree that shares tgflow's clone.

Each case lets the scripted agent (its ``run:`` steps) do what a hostile or careless agent
does to git, then checks that tgflow's own git work is unaffected and nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import git, log, make_origin, show, task_md

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus


def run(ws: Workspace, task_id: str) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), NodeSettings())


def open_ws(origin: Path, root: Path) -> Workspace:
    ws = Workspace.open(str(origin), root)
    reconcile(ws)
    return ws


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(objectname) %(refname)")


def sh(command: str) -> dict:
    return {"run": command}


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def test_hooks_path_set_by_the_agent_runs_no_hook_of_tgflow(tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hook = f"#!/bin/sh\\necho \\$0 >> {marker}\\nexit 1\\n"
    install = (
        "mkdir -p .githooks && for h in pre-commit commit-msg pre-merge-commit pre-push "
        f"post-checkout; do printf '{hook}' > .githooks/$h; chmod +x .githooks/$h; done && "
        "git config core.hooksPath .githooks"
    )
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[sh(install), {"no_commit": True}]),
            # b's agent leaves its commit to tgflow: the hook is on main and configured now.
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n"), {"no_commit": True}]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    for task_id in ("a", "b"):
        record = run(ws, task_id)
        assert record.status == NodeStatus.COMPLETED, record.reason
    subjects = log(origin)
    assert "chore: update task a status to completed" in subjects
    assert "chore: update task b status to completed" in subjects
    assert show(origin, "b.txt") == "b"
    assert not marker.exists(), marker.read_text()
    git(origin, "fsck", "--no-progress")


def test_remote_set_url_by_the_agent_does_not_redirect_tgflows_pushes(tmp_path: Path) -> None:
    other = make_origin(tmp_path, {"README.md": "another project\n"}, name="other.git")
    before = refs(other)
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md(
                "a", steps=[write("a.txt", "a\n"), sh(f"git remote set-url origin {other}")]
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"
    assert "Merge task a: Task a" in log(origin)
    assert refs(other) == before
    assert git(ws.integration, "config", "--get", "remote.origin.url") == str(origin)


def test_deleted_worktree_git_file_never_reaches_the_users_checkout(tmp_path: Path) -> None:
    user = tmp_path / "user"
    git(tmp_path, "init", "-q", "-b", "main", str(user))
    (user / "mine.txt").write_text("mine\n", encoding="utf-8")
    git(user, "add", "-A")
    git(user, "commit", "-q", "-m", "user work")
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md(
                "a",
                steps=[
                    write("a.txt", "a\n"),
                    sh("git add -A && git commit -q -m 'agent: a'"),
                    write("late.txt", "late\n"),
                    sh("rm .git"),
                    {"no_commit": True},
                ],
            )
        },
    )
    ws = open_ws(origin, user / "tgflow-ws")
    user_head = git(user, "rev-parse", "HEAD")
    record = run(ws, "a")
    assert git(user, "rev-parse", "HEAD") == user_head
    assert git(user, "log", "--format=%s") == "user work"
    assert git(user, "diff", "--cached", "--name-only") == ""
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"  # the agent's commit
    assert show(origin, "late.txt") == "late"  # what it left uncommitted


def test_force_push_rewinding_main_stops_the_next_merge_and_keeps_the_lost_commits(
    tmp_path: Path,
) -> None:
    origin = tmp_path / "origin.git"
    make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")]),
            "tasks/b.md": task_md(
                "b",
                steps=[
                    write("b.txt", "b\n"),
                    sh("git push -q --force origin $(git rev-list --max-parents=0 HEAD):main"),
                ],
            ),
        },
    )
    initial = git(origin, "rev-parse", "main")
    ws = open_ws(origin, tmp_path / "ws")
    assert run(ws, "a").status == NodeStatus.COMPLETED
    pushed_a = git(origin, "rev-parse", "main")

    record = run(ws, "b")
    assert record.status == NodeStatus.FAILED
    assert record.cause == Cause.GIT
    assert "Merge task a: Task a" in (record.reason or "")
    assert "\n" not in (record.reason or "")
    assert git(origin, "rev-parse", "main") == initial  # tgflow forced nothing back
    lost = git(origin, "for-each-ref", "--format=%(objectname)", "refs/tgflow/lost/")
    assert lost == pushed_a
    assert "b.txt" in git(origin, "ls-tree", "-r", "--name-only", "refs/heads/tgflow/b")


def test_push_refused_by_a_pre_receive_hook_quotes_the_origins_message(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")])})
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  if [ "$ref" = refs/heads/main ]; then\n'
        "    echo 'policy: main is frozen until the release is out' >&2; exit 1\n"
        "  fi\ndone\nexit 0\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.FAILED
    assert "policy: main is frozen until the release is out" in (record.reason or "")
    assert "\n" not in (record.reason or "")


def test_worktree_git_replaced_or_pruned_is_relinked_and_nothing_is_lost(tmp_path: Path) -> None:
    def steps(task_id: str, vandalism: str) -> list[dict]:
        return [
            write(f"{task_id}.txt", task_id),
            sh(f"git add -A && git commit -q -m 'agent: {task_id}'"),
            write(f"late-{task_id}.txt", "late"),
            sh(vandalism),
            {"no_commit": True},
        ]

    origin = make_origin(
        tmp_path,
        {
            # a repository of its own where the link to tgflow's clone was
            "tasks/a.md": task_md("a", steps=steps("a", "rm .git && git init -q")),
            # the link gone and its record in the clone pruned (as another node's cleanup does)
            "tasks/b.md": task_md(
                "b", steps=steps("b", "rm .git && git -C ../../integration worktree prune")
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    for task_id in ("a", "b"):
        record = run(ws, task_id)
        assert record.status == NodeStatus.COMPLETED, record.reason
        assert show(origin, f"{task_id}.txt") == task_id
        assert show(origin, f"late-{task_id}.txt") == "late"
    assert git(ws.integration, "worktree", "list", "--porcelain").count("worktree ") == 1
