"""run_node on real git: a bare origin, tgflow's own workspace clone, the scripted agent."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from helpers.gitrepos import branches, git, log, make_origin, push_change, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.process import pid_alive
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git import runner
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.git.worktrees import start_task
from tasks_lib.graph.taskfile import Status, parse_task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus

NONE = NodeSettings(sandbox="none")  # for agents that play someone outside the run


def run(ws: Workspace, task_id: str, **kwargs) -> NodeRecord:
    settings = kwargs.pop("settings", NodeSettings())
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), settings, **kwargs)


def task_on(origin: Path, rel: str, ref: str = "main"):
    task, problems, _ = parse_task(show(origin, rel, ref), Path(rel))
    assert task is not None, problems
    return task


def remote_branches(origin: Path) -> list[str]:
    return branches(origin)


def assert_nothing_left(ws: Workspace, origin: Path) -> None:
    assert not any(ws.worktrees_dir.iterdir()) if ws.worktrees_dir.exists() else True
    assert branches(ws.integration) == []
    assert remote_branches(origin) == []
    listing = git(ws.integration, "worktree", "list", "--porcelain")
    assert listing.count("worktree ") == 1  # only the integration clone itself


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def test_diamond_node_by_node_ends_merged_pushed_and_clean(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")]),
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")], depends_on=["a"]),
            "tasks/c.md": task_md("c", steps=[write("c.txt", "c\n")], depends_on=["a"]),
            "tasks/sub/d.md": task_md("d", steps=[write("d.txt", "d\n")], depends_on=["b", "c"]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(validate_commands=["test -f README.md"])
    for task_id in ("a", "b", "c", "d"):
        record = run(ws, task_id, settings=settings)
        assert record.status == NodeStatus.COMPLETED, record.reason
        assert record.sessions == 1
        assert record.cleanup == {"worktree": True, "branch": True, "remote_branch": True}

    subjects = log(origin)
    for task_id in ("a", "b", "c", "d"):
        assert subjects.count(f"Merge task {task_id}: Task {task_id}") == 1
        assert subjects.count(f"chore: update task {task_id} status to completed") == 1
        assert show(origin, f"{task_id}.txt") == task_id
    for rel in ("tasks/a.md", "tasks/b.md", "tasks/c.md", "tasks/sub/d.md"):
        task = task_on(origin, rel)
        assert task.status == Status.COMPLETED
        assert "Files changed" in (task.section("Summary") or "")
    # d was started from the main that already held b and c: its branch saw their files.
    assert git(origin, "log", "-1", "--format=%P", "main~1").count(" ") == 1
    assert_nothing_left(ws, origin)


# A name git would quote (a byte outside ASCII) or split (spaces, one leading) is the same
# name to the agent resolving it and in the record.
@pytest.mark.parametrize("name", ["shared.txt", " shared é.txt"])
def test_second_of_two_nodes_editing_the_same_line_conflicts_resolves_and_merges(
    tmp_path: Path, name: str
) -> None:
    origin = tmp_path / "origin.git"
    merged_a = f"git --git-dir={origin} log main --format=%s | grep -q 'Merge task a'"
    wait_for_a = f"until {merged_a}; do sleep 0.1; done"
    make_origin(
        tmp_path,
        {
            name: "first line\nthe line\n",
            "tasks/a.md": task_md(
                "a", steps=[{"replace": {"path": name, "old": "the line", "new": "A"}}]
            ),
            # b starts from the same main as a, and finishes after a has merged.
            "tasks/b.md": task_md(
                "b",
                steps=[
                    {"run": wait_for_a},
                    {"replace": {"path": name, "old": "the line", "new": "B"}},
                ],
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    records: dict[str, NodeRecord] = {}
    threads = [
        # b's agent watches the origin, which a sandbox hides
        threading.Thread(target=lambda t=t: records.__setitem__(t, run(ws, t, settings=NONE)))
        for t in "ab"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert records["a"].status == NodeStatus.COMPLETED
    b = records["b"]
    assert b.status == NodeStatus.COMPLETED, b.reason
    assert [(c.round, c.files, c.resolved) for c in b.conflicts] == [(1, [name], True)]
    assert b.sessions == 2  # the implementation, then the conflict resolution
    assert show(origin, name).splitlines() == ["first line", "B", "A"]
    assert_nothing_left(ws, origin)


@pytest.mark.serial
def test_cancelled_session_keeps_its_work_and_records_nothing_on_main(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path, {"tasks/c.md": task_md("c", steps=[write("c.txt", "c\n"), {"hang": True}])}
    )
    ws = open_ws(origin, tmp_path / "ws")
    cancel = threading.Event()
    written = ws.worktree_path("c") / "c.txt"

    def cancel_once_written() -> None:  # not on a timer: a busy machine writes later
        while not written.exists():
            time.sleep(0.05)
        cancel.set()

    threading.Thread(target=cancel_once_written, daemon=True).start()
    record = run(ws, "c", cancel=cancel)

    assert record.status == NodeStatus.CANCELLED
    assert task_on(origin, "tasks/c.md").status == Status.PENDING
    assert show(origin, "c.txt", "tgflow/c") == "c"  # the WIP commit, backed up


def test_validation_failing_on_the_branch_merges_nothing_and_keeps_the_work(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"tasks/x.md": task_md("x", steps=[write("bad.txt", "oops\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(
        ws, "x", settings=NodeSettings(validate_commands=["echo checking", "! test -f bad.txt"])
    )

    assert record.status == NodeStatus.FAILED
    assert "! test -f bad.txt" in record.reason and "on the task branch" in record.reason
    assert not any(s.startswith("Merge task") for s in log(origin))
    task = task_on(origin, "tasks/x.md")
    assert task.status == Status.FAILED
    assert "bad.txt" in (task.section("Notes") or "")
    assert remote_branches(origin) == ["tgflow/x"]  # the work is backed up, not lost
    assert show(origin, "bad.txt", "tgflow/x") == "oops"


def test_validation_failing_after_the_merge_resets_main_and_leaves_the_origin(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"tasks/y.md": task_md("y", steps=[write("y.txt", "y\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(validate_commands=["! (test -f x.txt && test -f y.txt)"])
    assert run(ws, "y", settings=settings, stop_after_develop=True).status == NodeStatus.CANCELLED
    moved = push_change(origin, tmp_path, "x.txt", "x\n", "someone adds x")

    record = run(ws, "y", settings=settings, final_attempt=False)

    assert record.status == NodeStatus.FAILED
    assert "after merging into main" in record.reason
    assert git(origin, "rev-parse", "main") == moved  # nothing pushed
    assert ws.head() == moved  # the integration worktree is back on the pre-merge commit
    assert git(ws.integration, "status", "--porcelain") == ""
    assert branches(ws.integration) == ["tgflow/y"]


def test_safe_exit_ends_blocked_with_the_reason_in_notes_on_main(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/k.md": task_md(
                "k",
                steps=[write("draft.txt", "half\n"), {"block": "the API key is missing"}],
                extra_body="\n## Notes\n\nWritten by the user.\n",
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "k")

    assert record.status == NodeStatus.BLOCKED
    assert record.reason == "the API key is missing"
    task = task_on(origin, "tasks/k.md")
    assert task.status == Status.BLOCKED
    notes = task.section("Notes") or ""
    assert "Written by the user." in notes and "the API key is missing" in notes
    assert log(origin)[0] == "chore: update task k status to blocked"
    # the unfinished work is kept on the branch, never on main
    assert show(origin, "draft.txt", "tgflow/k") == "half"
    assert any("kept branch tgflow/k" in n for n in record.notes)
    assert not ws.worktree_path("k").exists()


def test_hanging_agent_is_stalled_and_its_whole_process_group_killed(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/h.md": task_md("h", steps=[{"hang": True}])})
    ws = open_ws(origin, tmp_path / "ws")
    lines: list[str] = []
    record = run(
        ws,
        "h",
        # the pids it prints are the host's only outside a sandbox (the process group's
        # end is proved here; the sandbox's in tests/faults/test_sandbox_faults.py)
        settings=NodeSettings(idle_timeout_s=1.5, sandbox="none"),
        on_line=lines.append,
        final_attempt=False,
    )

    assert record.status == NodeStatus.STALLED
    assert "no output for 1.5s" in record.reason
    pids = re.search(r"hanging \(pid (\d+), child pid (\d+)\)", "\n".join(lines))
    assert pids is not None
    assert not pid_alive(int(pids.group(1))) and not pid_alive(int(pids.group(2)))


def test_push_rejected_because_the_origin_moved_is_recovered(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/p.md": task_md("p", steps=[write("p.txt", "p\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    # A validation step that lets someone else push to the origin: first while the branch is
    # validated (so the merged tree is new and validated again), then the first time it runs
    # on the merged main: our push that follows is rejected.
    mover = tmp_path / "move_origin.sh"
    mover.write_text(
        f"""where=branch; [ "$(basename "$PWD")" = integration ] && where=merged
[ -e {tmp_path}/moved-$where ] && exit 0
touch {tmp_path}/moved-$where
cd {other} && echo $where > $where.txt && git add $where.txt \\
  && git -c user.name=O -c user.email=o@x commit -qm "their change on $where" \\
  && git push -q origin main
"""
    )
    # the validation plays the someone else pushing: outside any sandbox
    record = run(
        ws, "p", settings=NodeSettings(validate_commands=[f"bash {mover}"], sandbox="none")
    )

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert any("origin moved" in n for n in record.notes)
    subjects = log(origin)
    assert subjects[:2] == ["chore: update task p status to completed", "Merge task p: Task p"]
    assert "their change on branch" in subjects and "their change on merged" in subjects
    assert show(origin, "p.txt") == "p" and show(origin, "merged.txt") == "merged"
    assert_nothing_left(ws, origin)


def test_run_killed_after_develop_is_resumed_and_handed_to_the_agent_again(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"tasks/r.md": task_md("r", steps=[write("r.txt", "r\n")])})
    first = run(open_ws(origin, tmp_path / "ws"), "r", stop_after_develop=True)
    assert first.status == NodeStatus.CANCELLED and first.sessions == 1

    # A new run: a fresh open of the same workspace, as after a crash.
    ws = Workspace.open(str(origin), tmp_path / "ws")
    report = reconcile(ws)
    assert report.removed_worktrees == ["r"]
    assert report.resumable == {"tgflow/r": 1}
    second = run(ws, "r")

    assert second.status == NodeStatus.COMPLETED, second.reason
    assert second.sessions == 1  # a kept branch always goes back to the agent
    assert log(origin).count("r: scripted changes") == 1  # it found its work already done
    assert show(origin, "r.txt") == "r"
    assert_nothing_left(ws, origin)
    # and a third run finds it done on main: nothing is run at all
    again = run(ws, "r")
    assert again.already_done and again.status == NodeStatus.COMPLETED and again.sessions == 0


def test_uncommitted_work_in_a_killed_worktree_is_saved_and_developed_further(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"tasks/w.md": task_md("w", steps=[write("w.txt", "w\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    checkout = start_task(ws, "w")
    (checkout.path / "half.txt").write_text("unsaved\n")  # the agent was killed here

    report = reconcile(Workspace.open(str(origin), tmp_path / "ws"))
    assert report.saved_work and report.resumable == {"tgflow/w": 1}
    record = run(ws, "w")

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert record.sessions == 1  # a WIP branch is developed further, not merged as is
    assert show(origin, "half.txt") == "unsaved" and show(origin, "w.txt") == "w"


def test_agent_edits_to_task_files_are_reverted_and_leftovers_committed(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/t.md": task_md(
                "t", steps=[write("t.txt", "t\n"), {"touch_task_file": True}, {"no_commit": True}]
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "t")

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert any("reverted the agent's edits to protected paths" in n for n in record.notes)
    assert "Edited by the scripted agent" not in show(origin, "tasks/t.md")
    assert task_on(origin, "tasks/t.md").status == Status.COMPLETED
    assert "tgflow: commit uncommitted work of t" in log(origin)


def test_agent_without_changes_fails_and_leaves_no_branch(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/n.md": task_md("n", steps=[{"sleep": 0}])})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "n", final_attempt=False)

    assert record.status == NodeStatus.FAILED
    assert "without making any change" in record.reason
    assert branches(ws.integration) == [] and remote_branches(origin) == []
    assert task_on(origin, "tasks/n.md").status == Status.PENDING  # a retry follows


def test_retry_gets_the_previous_failure_and_succeeds(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {"tasks/f.md": task_md("f", steps=[{"fail_attempts": 1}, write("f.txt", "f\n")])},
    )
    ws = open_ws(origin, tmp_path / "ws")
    first = run(ws, "f", final_attempt=False)
    assert first.status == NodeStatus.FAILED and "failing as scripted" in first.reason
    second = run(ws, "f", attempt=2, previous_failure=first.reason)
    assert second.status == NodeStatus.COMPLETED, second.reason
    assert second.attempts[0].number == 2


def test_retry_after_failed_validation_develops_the_kept_branch_further(tmp_path: Path) -> None:
    fix_or_break = "if test -f bad.txt; then git rm -q bad.txt; else echo bad > bad.txt; fi"
    origin = make_origin(
        tmp_path,
        {"tasks/v.md": task_md("v", steps=[{"run": fix_or_break}, write("good.txt", "ok\n")])},
    )
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(validate_commands=["! test -f bad.txt"])
    first = run(ws, "v", settings=settings, final_attempt=False)
    assert first.status == NodeStatus.FAILED and branches(origin) == ["tgflow/v"]

    second = run(ws, "v", settings=settings, attempt=2, previous_failure=first.reason)

    assert second.status == NodeStatus.COMPLETED, second.reason
    assert second.sessions == 1
    assert show(origin, "good.txt") == "ok"
    assert "bad.txt" not in git(origin, "ls-tree", "--name-only", "main")


def test_the_pipeline_runs_with_no_git_identity_configured(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/i.md": task_md("i", steps=[write("i.txt", "i\n")])})
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.git.workspace import Workspace
ws = Workspace.open({str(origin)!r}, Path({str(tmp_path / "ws")!r}))
print(ws.identity)
rec = run_node(ws, ws.find_task("i"), ScriptedAgent(), NodeSettings())
print(rec.status, rec.reason)
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "('tgflow', 'tgflow@localhost')" in done.stdout
    assert "completed" in done.stdout, done.stdout
    assert git(origin, "log", "-1", "--format=%an <%ae>", "main") == "tgflow <tgflow@localhost>"


def test_without_push_the_origin_is_never_touched(tmp_path: Path) -> None:
    push = False
    origin = make_origin(tmp_path, {"tasks/q.md": task_md("q", steps=[write("q.txt", "q\n")])})
    before = git(origin, "rev-parse", "main")
    ws = Workspace.open(str(origin), tmp_path / "ws", push=push)
    record = run(ws, "q", settings=NodeSettings(push=push))
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert git(origin, "rev-parse", "main") == before
    assert show(ws.integration, "q.txt") == "q"


def test_an_agent_that_abandons_the_conflict_merge_fails_the_node_at_once(tmp_path: Path) -> None:
    from tasks_lib.agents.command import CommandAgent

    origin = make_origin(
        tmp_path,
        {
            "shared.txt": "the line\n",
            "tasks/m.md": task_md(
                "m", steps=[{"replace": {"path": "shared.txt", "old": "the line", "new": "M"}}]
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    assert run(ws, "m", stop_after_develop=True).status == NodeStatus.CANCELLED
    push_change(origin, tmp_path, "shared.txt", "theirs\n", "they edit the same line")

    task = ws.find_task("m")
    assert task is not None
    quitter = CommandAgent(["bash", "-c", "git merge --abort; echo gave up"])
    record = run_node(ws, task, quitter, NodeSettings(), final_attempt=False)

    assert record.status == NodeStatus.FAILED
    assert "abandoned the merge of main" in record.reason, record.reason
    assert record.sessions == 2  # the kept branch's session, then the conflict's only
    assert show(origin, "shared.txt", "tgflow/m") == "M"  # the work is kept


def test_a_run_without_push_never_deletes_the_origins_backup_branches(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/u.md": task_md("u", steps=[write("u.txt", "u\n")]),
            "tasks/z.md": task_md("z", steps=[write("z.txt", "z\n")]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    # A pushing run backs u up on the origin and stops; z's merged branch lingers there.
    assert run(ws, "u", stop_after_develop=True).status == NodeStatus.CANCELLED
    git(origin, "branch", "tgflow/z", "main")  # holds nothing new: a pushing run would delete it
    assert remote_branches(origin) == ["tgflow/u", "tgflow/z"]

    ws = Workspace.open(str(origin), tmp_path / "ws", push=False)
    reconcile(ws, push=False)
    record = run(ws, "u", settings=NodeSettings(push=False))

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert "remote_branch" not in record.cleanup
    # u's work is merged only in the local workspace: the origin keeps its copy.
    assert remote_branches(origin) == ["tgflow/u", "tgflow/z"]
    assert show(origin, "u.txt", "tgflow/u") == "u"


def test_a_failure_that_cannot_be_recorded_on_main_still_returns_its_record(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    remove_task = (
        f"cd {other} && git rm -q tasks/g.md && git -c user.name=O -c user.email=o@x "
        "commit -qm 'drop g' && git push -q origin main"
    )
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/g.md": task_md("g", steps=[{"run": remove_task}, {"fail": "broken"}]),
        },
    )
    git(tmp_path, "clone", "-q", str(origin), str(other))
    ws = open_ws(origin, tmp_path / "ws")

    record = run(ws, "g", settings=NONE)  # its agent plays a person pushing to the origin

    assert record.status == NodeStatus.FAILED
    assert "failing as scripted: broken" in record.reason
    assert any("vanished" in n for n in record.notes), record.notes


GIT_PER_NODE = 22  # issue 12: 79 before, 51, now 18 (validated: backup push, fetch); the shell: 7


def test_a_node_costs_few_git_commands(tmp_path: Path) -> None:
    """Each git process costs 2-5 ms, most of a node's own time: a node of a chain (one
    commit, validated, merged, pushed) stays within its budget of git commands. Only this
    thread's are counted (a slow machine may let the checkpoint thread push meanwhile)."""
    origin = make_origin(
        tmp_path,
        {f"tasks/{t}.md": task_md(t, steps=[write(f"{t}.txt", f"{t}\n")]) for t in ("a", "b")},
    )
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(sandbox="none", validate_commands=["true"])
    assert run(ws, "a", settings=settings).status == NodeStatus.COMPLETED
    commands: list[str] = []
    original, me = runner._execute, threading.get_ident()

    def execute(command: list[str], *args: Any) -> Any:
        if threading.get_ident() == me:
            shown = [str(c) for c in command[1:]]
            while shown and shown[0] == "-c":
                shown = shown[2:]
            commands.append(" ".join(shown[:2]))
        return original(command, *args)

    with mock.patch.object(runner, "_execute", execute):
        record = run(ws, "b", settings=settings)

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "b.txt") == "b"
    assert len(commands) <= GIT_PER_NODE, Counter(commands).most_common()
