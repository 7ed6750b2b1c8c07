"""The merge queue on real git: batches, bisection, and the post-merge validation skipped only
for the tree that was validated already."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.gitrepos import git, log, make_origin, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.links import AHEAD_DIR
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.integrate import merge_queue
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def green_check(tmp: Path) -> str:
    """The build: it breaks when c's and d's files are on one tree (each alone is fine).
    In the integration clone it logs each run (one line per validation of merged trees); on
    a task branch it waits for that task's gate, so the test decides the arrival order."""
    return f"""
if [ "$(basename "$PWD")" = integration ]; then echo run >> {tmp}/merged-validations
else task=$(basename "$PWD"); touch {tmp}/validating-$task
  while [ ! -e {tmp}/gate-$task ]; do sleep 0.05; done
fi
! {{ [ -e c.txt ] && [ -e d.txt ]; }}
"""


def pushed_tips_checker(origin: Path, tmp: Path) -> None:
    """An update hook on the origin: every commit pushed to main is checked with the same
    rule the build has, and logged (the origin refuses nothing)."""
    hook = origin / "hooks" / "update"
    hook.write_text(
        f"""#!/bin/sh
[ "$1" = refs/heads/main ] || exit 0
files=$(git ls-tree --name-only "$3")
if echo "$files" | grep -qx c.txt && echo "$files" | grep -qx d.txt
then echo "red $3" >> {tmp}/pushed; else echo "green $3" >> {tmp}/pushed; fi
"""
    )
    hook.chmod(0o755)


def test_one_culprit_among_four_goes_back_and_the_three_others_land_in_one_push(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c", "d"]
    origin = make_origin(
        tmp_path,
        {f"tasks/{i}.md": task_md(i, steps=[write(f"{i}.txt", f"{i}\n")]) for i in ids},
    )
    pushed_tips_checker(origin, tmp_path)
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(
        validate_commands=[green_check(tmp_path)], sandbox="none", merge_batch=4
    )
    records: dict[str, NodeRecord] = {}

    def node(task_id: str) -> None:
        task = ws.find_task(task_id)
        assert task is not None
        records[task_id] = run_node(ws, task, ScriptedAgent(), settings)

    threads = [threading.Thread(target=node, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    wait_for(lambda: all((tmp_path / f"validating-{i}").exists() for i in ids), "4 branches")
    queue = merge_queue(ws)
    with ws.merge_lock:  # a merge in progress: the branches queue up, in the order let through
        for n, task_id in enumerate(ids, 1):
            (tmp_path / f"gate-{task_id}").touch()
            wait_for(lambda n=n: queue.waiting == n, f"{task_id} in the queue")
    for t in threads:
        t.join(120)

    assert {i: records[i].status for i in ids} == {
        "a": NodeStatus.COMPLETED,
        "b": NodeStatus.COMPLETED,
        "c": NodeStatus.COMPLETED,
        "d": NodeStatus.FAILED,
    }, {i: records[i].reason for i in ids}
    d = records["d"]
    assert d.cause is Cause.VALIDATION and "bisecting found that this branch fails" in d.reason
    # abcd fails, ab passes, c on ab passes, d on abc is the tree that failed: three runs.
    assert (tmp_path / "merged-validations").read_text().count("run") == 3
    assert "merged in a batch with b, c" in " ".join(records["a"].notes)
    assert show(origin, "c.txt") == "c" and "d.txt" not in git(origin, "ls-tree", "main")
    assert "tgflow/d" in git(origin, "branch", "--list", "tgflow/d")  # its work is kept
    subjects = log(origin)
    assert [s for s in subjects if s.startswith("Merge task")] == [
        "Merge task c: Task c",
        "Merge task b: Task b",
        "Merge task a: Task a",
    ]
    pushed = (tmp_path / "pushed").read_text().split("\n")
    tips = [line for line in pushed if line]
    assert tips and all(t.startswith("green") for t in tips), tips
    # one push for the batch, one for d's failure noted in its task file
    assert len(tips) == 2


def run_one(ws: Workspace, task_id: str, settings: NodeSettings) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), settings)


def test_the_post_merge_validation_is_skipped_only_when_the_tree_is_the_one_validated(
    tmp_path: Path,
) -> None:
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")]),
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    count = f"echo $(basename $PWD) >> {tmp_path}/validations"
    settings = NodeSettings(validate_commands=[count], sandbox="none")

    first = run_one(ws, "a", settings)

    assert first.status is NodeStatus.COMPLETED, first.reason
    assert any("post-merge validation skipped" in n for n in first.notes), first.notes
    assert (tmp_path / "validations").read_text().split() == ["a"]  # the branch only

    # Someone pushes while b's branch is validated: the merged tree is new, so it is validated.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    mover = tmp_path / "mover.sh"
    mover.write_text(
        f"""[ "$(basename "$PWD")" = b ] || exit 0
[ -e {tmp_path}/moved ] && exit 0
touch {tmp_path}/moved
cd {other} && git pull -q && echo x > x.txt && git add x.txt \\
  && git -c user.name=O -c user.email=o@x commit -qm "their change" && git push -q origin main
"""
    )
    second = run_one(
        ws, "b", NodeSettings(validate_commands=[count, f"bash {mover}"], sandbox="none")
    )

    assert second.status is NodeStatus.COMPLETED, second.reason
    assert not any("post-merge validation skipped" in n for n in second.notes)
    assert (tmp_path / "validations").read_text().split() == ["a", "b", "integration"]
    assert show(origin, "x.txt") == "x" and show(origin, "b.txt") == "b"


def held_check(tmp: Path, breaks: str) -> str:
    """The build, breaking when ``breaks`` (a shell test) holds. On a task branch it waits
    for that task's gate; after merging it logs where it ran (``integration``, or the
    checkout a batch goes ahead in) and the first run in the integration clone waits for
    ``go``, so the test decides what arrives while a batch is validated."""
    return f"""
where=$(basename "$PWD")
case "$PWD" in
  */ahead/*) echo ahead >> {tmp}/merged-validations
    touch {tmp}/went-ahead ;;
  */integration) echo integration >> {tmp}/merged-validations
    touch {tmp}/validating-merged
    while [ ! -e {tmp}/go ]; do sleep 0.05; done ;;
  *) touch {tmp}/validating-$where
    while [ ! -e {tmp}/gate-$where ]; do sleep 0.05; done ;;
esac
! {{ {breaks}; }}
"""


def start_nodes(
    ws: Workspace, ids: list[str], settings: NodeSettings, cancel: threading.Event | None = None
) -> tuple[dict[str, NodeRecord], list[threading.Thread]]:
    records: dict[str, NodeRecord] = {}

    def node(task_id: str) -> None:
        task = ws.find_task(task_id)
        assert task is not None
        records[task_id] = run_node(ws, task, ScriptedAgent(), settings, cancel=cancel)

    threads = [threading.Thread(target=node, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    return records, threads


def arrive_while_validating(
    ws: Workspace,
    tmp: Path,
    first: list[str],
    then: str,
    threads: list[threading.Thread],
    went: Callable[[], bool] | None = None,
) -> None:
    """``first`` queue together and their merged batch starts validating; ``then`` arrives
    during that validation; the validation ends when ``then`` went ahead (``went``, by
    default: its validation ahead began)."""
    wait_for(lambda: all((tmp / f"validating-{i}").exists() for i in [*first, then]), "branches")
    queue = merge_queue(ws)
    with ws.merge_lock:
        for n, task_id in enumerate(first, 1):
            (tmp / f"gate-{task_id}").touch()
            wait_for(lambda n=n: queue.waiting == n, f"{task_id} in the queue")
    wait_for(lambda: (tmp / "validating-merged").exists(), "the first batch's validation")
    (tmp / f"gate-{then}").touch()
    wait_for(went or (lambda: (tmp / "went-ahead").exists()), f"{then} validated ahead")
    (tmp / "go").touch()
    for t in threads:
        t.join(120)


def three_tasks(tmp: Path) -> Path:
    """An origin whose tasks a, b and c each write a file of their own."""
    return make_origin(
        tmp, {f"tasks/{i}.md": task_md(i, steps=[write(f"{i}.txt", f"{i}\n")]) for i in "abc"}
    )


@pytest.mark.parametrize("left_over", [False, True], ids=["fresh", "over a broken checkout"])
def test_a_branch_arriving_while_a_batch_validates_lands_as_the_commits_validated_ahead(
    tmp_path: Path, left_over: bool
) -> None:
    ids = ["a", "b", "c"]
    origin = three_tasks(tmp_path)
    pushed_tips_checker(origin, tmp_path)
    ws = open_ws(origin, tmp_path / "ws")
    if left_over:  # what a workspace that moved leaves: a checkout linked to nowhere
        (ws.root / AHEAD_DIR / "0").mkdir(parents=True)
        (ws.root / AHEAD_DIR / "0" / ".git").write_text(f"gitdir: {tmp_path}/gone\n")
    settings = NodeSettings(validate_commands=[held_check(tmp_path, "false")], sandbox="none")
    records, threads = start_nodes(ws, ids, settings)

    arrive_while_validating(ws, tmp_path, ["a", "b"], "c", threads)

    assert {i: records[i].status for i in ids} == dict.fromkeys(ids, NodeStatus.COMPLETED), {
        i: records[i].reason for i in ids
    }
    c = records["c"]
    assert c.validated_ahead and any("validated ahead of main" in n for n in c.notes), c.notes
    # c was validated once, ahead of a and b, while they were: not again on base.
    assert (tmp_path / "merged-validations").read_text().split() == ["integration", "ahead"]
    # What landed is what was validated: c's merge commit, made ahead, is on the origin's
    # main, and so is its status commit (the validation saw it), with a's and b's beneath.
    assert git(origin, "rev-parse", "main~1") == c.merge_commit
    assert (
        git(origin, "log", "-1", "--format=%s", "main")
        == "chore: update task c status to completed"
    )
    assert c.merge_commit and c.merge_commit[:10] in show(origin, "tasks/c.md")
    assert [s for s in log(origin) if s.startswith("Merge task")] == [
        "Merge task c: Task c",
        "Merge task b: Task b",
        "Merge task a: Task a",
    ]
    tips = [t for t in (tmp_path / "pushed").read_text().split("\n") if t]
    assert len(tips) == 2 and all(t.startswith("green") for t in tips), tips


def test_a_branch_validated_ahead_of_a_batch_that_fails_is_validated_again_on_what_landed(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    origin = three_tasks(tmp_path)
    ws = open_ws(origin, tmp_path / "ws")
    breaks = "[ -e a.txt ] && [ -e b.txt ]"  # a and b each pass, together they break
    settings = NodeSettings(validate_commands=[held_check(tmp_path, breaks)], sandbox="none")
    records, threads = start_nodes(ws, ids, settings)

    arrive_while_validating(ws, tmp_path, ["a", "b"], "c", threads)

    assert {i: records[i].status for i in ids} == {
        "a": NodeStatus.COMPLETED,
        "b": NodeStatus.FAILED,
        "c": NodeStatus.COMPLETED,
    }, {i: records[i].reason for i in ids}
    assert records["b"].cause is Cause.VALIDATION
    c = records["c"]
    assert not c.validated_ahead and not any("validated ahead" in n for n in c.notes), c.notes
    # ab fails beside c ahead of it (on a and b): c is dropped and ab run again alone, where
    # it fails again; a alone is its branch's tree (skipped), b on a is the tree that
    # failed; then c is validated on a, what landed.
    assert (tmp_path / "merged-validations").read_text().split() == [
        "integration", "ahead", "integration", "integration",
    ]  # fmt: skip
    again = "failed while a batch was validated ahead beside it; run again alone, it failed again"
    assert any(again in n for n in records["b"].notes), records["b"].notes
    assert show(origin, "c.txt") == "c" and show(origin, "a.txt") == "a"
    assert "b.txt" not in git(origin, "ls-tree", "--name-only", "main")
    assert f"{c.merge_commit} Merge task c: Task c" in git(origin, "log", "--format=%H %s", "main")


def test_a_cancelled_run_stops_the_validation_ahead_and_lands_nothing(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    origin = three_tasks(tmp_path)
    ws = open_ws(origin, tmp_path / "ws")
    before = git(origin, "rev-parse", "main")
    hang = "sleep 613.25"  # the validation ahead never ends by itself
    went = f"touch {tmp_path}/went-ahead"
    check = held_check(tmp_path, "false").replace(went, f"{went}; {hang}")
    cancel = threading.Event()
    settings = NodeSettings(validate_commands=[check], sandbox="none")
    records, threads = start_nodes(ws, ids, settings, cancel)

    wait_for(lambda: all((tmp_path / f"validating-{i}").exists() for i in ids), "branches")
    queue = merge_queue(ws)
    with ws.merge_lock:
        for n, task_id in enumerate(["a", "b"], 1):
            (tmp_path / f"gate-{task_id}").touch()
            wait_for(lambda n=n: queue.waiting == n, f"{task_id} in the queue")
    wait_for(lambda: (tmp_path / "validating-merged").exists(), "a and b validating")
    (tmp_path / "gate-c").touch()
    wait_for(lambda: (tmp_path / "went-ahead").exists(), "c validated ahead")
    cancel.set()
    for t in threads:
        t.join(60)

    assert not any(t.is_alive() for t in threads)
    assert {i: records[i].status for i in ids} == dict.fromkeys(ids, NodeStatus.CANCELLED), {
        i: records[i].reason for i in ids
    }
    assert git(origin, "rev-parse", "main") == before
    left = subprocess.run(["pgrep", "-f", hang], capture_output=True, text=True).stdout
    assert left == "", f"the validation ahead still runs: {left}"


def sharing_check(tmp: Path, ahead: str, merged: str) -> str:
    """A build two runs of which break each other on one machine (as two test suites on one
    port do): each takes a lock, and a run that cannot take it fails. ``ahead`` and
    ``merged`` are what runs ahead and in the integration clone, around taking it."""
    take = f"exec 9>{tmp}/port; flock -n 9 || {{ echo port in use; exit 1; }}"
    return f"""
where=$(basename "$PWD")
case "$PWD" in
  */ahead/*) {ahead.format(take=take, tmp=tmp)} ;;
  */integration) {merged.format(take=take, tmp=tmp)} ;;
  *) touch {tmp}/validating-$where
    while [ ! -e {tmp}/gate-$where ]; do sleep 0.05; done ;;
esac
"""


def all_land_sharing(tmp: Path, ahead: str, merged: str) -> tuple[Path, dict[str, NodeRecord]]:
    """a and b validate merged while c arrives and goes ahead, on a ``sharing_check`` build;
    every node completes."""
    origin = three_tasks(tmp)
    ws = open_ws(origin, tmp / "ws")
    check = sharing_check(tmp, ahead=ahead, merged=merged)
    settings = NodeSettings(validate_commands=[check], sandbox="none")
    records, threads = start_nodes(ws, ["a", "b", "c"], settings)

    arrive_while_validating(ws, tmp, ["a", "b"], "c", threads)

    assert {i: records[i].status for i in "abc"} == dict.fromkeys("abc", NodeStatus.COMPLETED), {
        i: records[i].reason for i in "abc"
    }
    return origin, records


def test_a_validation_ahead_broken_by_the_one_beside_it_sends_no_branch_back(
    tmp_path: Path,
) -> None:
    """c's validation ahead fails only because a and b's holds the port: c is validated
    again on base, alone, and lands."""
    origin, records = all_land_sharing(
        tmp_path,
        ahead="touch {tmp}/went-ahead; {take}",
        merged="{take}; touch {tmp}/validating-merged; "
        "while [ ! -e {tmp}/go ]; do sleep 0.05; done",
    )

    c = records["c"]
    assert not c.validated_ahead
    assert any("validated ahead of main and failed there" in n for n in c.notes), c.notes
    assert show(origin, "c.txt") == "c"


def test_a_batch_broken_by_the_validation_ahead_beside_it_is_run_again_alone_and_lands(
    tmp_path: Path,
) -> None:
    """a and b's validation fails only because c's, ahead of it, holds the port: c's is
    stopped, a and b's run again alone, and all three land."""
    origin, records = all_land_sharing(
        tmp_path,
        ahead="{take}; touch {tmp}/went-ahead; sleep 600",
        merged="touch {tmp}/validating-merged; while [ ! -e {tmp}/go ]; do sleep 0.05; done; "
        "{take}",
    )

    again = "failed while a batch was validated ahead beside it; run again alone, it passed"
    assert all(any(again in n for n in records[i].notes) for i in "ab"), records["a"].notes
    assert not records["c"].validated_ahead and show(origin, "c.txt") == "c"


def test_a_branch_that_conflicts_ahead_of_a_batch_resolves_the_conflict_and_lands(
    tmp_path: Path,
) -> None:
    """c and a change the same line: c, merged ahead on a and b, conflicts there and merges
    nothing, so nothing of it is validated; once a and b landed it goes back to its agent to
    resolve the conflict, as it would have without going ahead."""
    replace = {"path": "shared.txt", "old": "the line"}
    origin = make_origin(
        tmp_path,
        {
            "shared.txt": "first line\nthe line\n",
            "tasks/a.md": task_md("a", steps=[{"replace": {**replace, "new": "A"}}]),
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")]),
            "tasks/c.md": task_md("c", steps=[{"replace": {**replace, "new": "C"}}]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(validate_commands=[held_check(tmp_path, "false")], sandbox="none")
    records, threads = start_nodes(ws, ["a", "b", "c"], settings)

    ahead = ws.root / AHEAD_DIR / "0"
    arrive_while_validating(ws, tmp_path, ["a", "b"], "c", threads, went=ahead.is_dir)

    assert {i: records[i].status for i in "abc"} == dict.fromkeys("abc", NodeStatus.COMPLETED), {
        i: records[i].reason for i in "abc"
    }
    c = records["c"]
    assert [(r.round, r.files, r.resolved) for r in c.conflicts] == [(1, ["shared.txt"], True)]
    assert not c.validated_ahead
    assert "ahead" not in (tmp_path / "merged-validations").read_text().split()
    assert show(origin, "shared.txt").splitlines() == ["first line", "C", "A"]
