"""Workspace: the clone tgflow owns, refused origins, branch names, reconcile, the merge lock."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from helpers.gitrepos import branches, git, make_origin, write_files

from tasks_lib.git import WorkspaceError, runner, worktrees
from tasks_lib.git.base import commit_paths, merge
from tasks_lib.git.locks import merge_lock_for, run_lock
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.runner import GitError
from tasks_lib.git.workspace import Workspace


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path, {"README.md": "demo\n", "tasks/.keep": ""})


def test_opens_a_clone_of_its_own_on_base_and_reuses_it(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    assert git(ws.integration, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert ws.head() == git(origin, "rev-parse", "main")
    assert "/.tgflow/" in (ws.integration / ".git/info/exclude").read_text().splitlines()
    again = Workspace.open(str(origin), tmp_path / "ws")
    assert again.integration == ws.integration
    # the same origin shares one merge lock, and the workspace pickles (Prefect parameters)
    assert again.merge_lock is ws.merge_lock is merge_lock_for(str(origin))
    assert pickle.loads(pickle.dumps(ws)).merge_lock is ws.merge_lock


def test_unreachable_origin_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(
        WorkspaceError,
        match=r"cannot reach origin \S*nowhere.git: '\S*nowhere.git' does not appear to be a git "
        r"repository\. Check the URL",
    ):
        Workspace.open(str(tmp_path / "nowhere.git"), tmp_path / "ws")


def test_missing_base_branch_is_refused(origin: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match=r"has no branch 'develop' \(branches: main\)"):
        Workspace.open(str(origin), tmp_path / "ws", base="develop")


def test_checkout_with_base_checked_out_is_refused_before_any_work(
    origin: Path, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    with pytest.raises(WorkspaceError, match=r"'main' checked out.*remote.*bare mirror"):
        Workspace.open(str(checkout), tmp_path / "ws")
    assert not (tmp_path / "ws").exists()
    # fine when nothing will be pushed, or when another branch is checked out there
    Workspace.open(str(checkout), tmp_path / "ws-nopush", push=False)
    git(checkout, "switch", "-q", "-c", "elsewhere")
    Workspace.open(str(checkout), tmp_path / "ws-other")


def test_task_ids_become_safe_distinct_branch_names(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    ids = ["graph", "graph/construction", "--force", "weird id: ü?", "..", "x.lock"]
    names = [ws.branch(i) for i in ids]
    assert len(set(names)) == len(ids)
    for task_id in ids:
        checkout = worktrees.start_task(ws, task_id)
        assert checkout.branch.startswith("tgflow/") and not checkout.branch[7:].startswith("-")
        assert checkout.path.parent == ws.worktrees_dir
        git(ws.integration, "check-ref-format", "--branch", checkout.branch)


def test_reconcile_keeps_unmerged_work_and_deletes_merged_branches(
    origin: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    work = worktrees.start_task(ws, "work")
    write_files(work.path, {"w.txt": "w\n"})
    worktrees.commit_all(ws, work.path, "work\n\nTgflow-Task: work")
    worktrees.push_branch(ws, "work")
    worktrees.start_task(ws, "merged")  # a branch with nothing beyond base

    report = reconcile(Workspace.open(str(origin), tmp_path / "ws"))

    assert sorted(report.removed_worktrees) == ["merged", "work"]
    assert report.resumable == {"tgflow/work": 1}
    assert report.deleted_branches == ["tgflow/merged"]
    assert branches(ws.integration) == ["tgflow/work"]
    assert branches(origin) == ["tgflow/work"]
    assert not ws.worktrees_dir.exists() or not any(ws.worktrees_dir.iterdir())


def test_branch_only_on_the_origin_is_resumed(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    work = worktrees.start_task(ws, "t")
    write_files(work.path, {"t.txt": "t\n"})
    worktrees.commit_all(ws, work.path, "t work\n\nTgflow-Task: t")
    worktrees.push_branch(ws, "t")

    other = Workspace.open(str(origin), tmp_path / "ws2")  # another machine
    checkout = worktrees.start_task(other, "t")
    assert checkout.resumed
    assert (checkout.path / "t.txt").read_text() == "t\n"


def test_merge_conflict_is_aborted_not_left_half_done(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    for task_id, text in (("a", "A\n"), ("b", "B\n")):
        checkout = worktrees.start_task(ws, task_id)
        write_files(checkout.path, {"README.md": text})
        worktrees.commit_all(ws, checkout.path, task_id)
    assert merge(ws, "a", "Merge task a").merged
    before = ws.head()

    result = merge(ws, "b", "Merge task b")

    assert not result.merged and result.conflicts == ["README.md"]
    assert ws.head() == before
    assert not ws.in_merge(ws.integration)
    assert git(ws.integration, "status", "--porcelain") == ""


def test_conflicted_files_are_named_as_they_are(origin: Path, tmp_path: Path) -> None:
    """Not as git prints them: it quotes a name with a byte outside ASCII, and a name's
    leading space is whitespace to whoever strips its output."""
    ws = Workspace.open(str(origin), tmp_path / "ws")
    name = " café.md"
    for task_id, text in (("a", "A\n"), ("b", "B\n")):
        checkout = worktrees.start_task(ws, task_id)
        write_files(checkout.path, {name: text})
        worktrees.commit_all(ws, checkout.path, task_id)
    assert merge(ws, "a", "Merge task a").merged

    result = merge(ws, "b", "Merge task b")

    assert not result.merged and result.conflicts == [name]


def test_commits_on_a_detached_head_survive_the_checkout(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    checkout = worktrees.start_task(ws, "d")
    git(checkout.path, "switch", "-q", "--detach")
    write_files(checkout.path, {"d.txt": "d\n"})  # left uncommitted on a detached HEAD

    report = reconcile(Workspace.open(str(origin), tmp_path / "ws"))

    assert report.resumable == {"tgflow/d": 1}
    assert git(ws.integration, "show", "tgflow/d:d.txt") == "d"


@pytest.mark.parametrize("new", [True, False])
def test_a_commit_of_paths_holds_those_files_whatever_their_names(
    origin: Path, tmp_path: Path, new: bool
) -> None:
    """A name is a name, not a pattern: ``[id].md`` as a glob also matches ``i.md``."""
    ws = Workspace.open(str(origin), tmp_path / "ws", push=False)
    reconcile(ws, push=False)
    if not new:
        write_files(ws.integration, {"tasks/[id].md": "before\n"})
        commit_paths(ws, [ws.integration / "tasks/[id].md"], "the task file")
    write_files(ws.integration, {"tasks/i.md": "someone else's\n"})
    git(ws.integration, "add", "tasks/i.md")
    git(ws.integration, "commit", "-qm", "i")
    write_files(ws.integration, {"tasks/[id].md": "status\n", "tasks/i.md": "not this\n"})

    commit_paths(ws, [ws.integration / "tasks/[id].md"], "status of id")

    assert git(ws.integration, "show", "--name-only", "--format=", "HEAD") == "tasks/[id].md"
    assert git(ws.integration, "diff", "--cached", "--name-only") == ""  # nothing else staged
    assert git(ws.integration, "diff", "--name-only") == "tasks/i.md"


def test_merges_of_a_no_push_run_survive_the_next_pushing_run(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws", push=False)
    reconcile(ws, push=False)
    write_files(ws.integration, {"local.txt": "merged without push\n"})
    commit_paths(ws, [ws.integration / "local.txt"], "a merge that was never pushed")
    unpushed = ws.head()

    # a later run without push goes on from its own merges
    assert reconcile(ws, push=False).kept_unpushed is None
    assert ws.head() == unpushed

    # a pushing run stands on origin's main, and keeps the local work on a branch first
    report = reconcile(Workspace.open(str(origin), tmp_path / "ws"), push=True)
    assert report.kept_unpushed is not None
    assert report.kept_unpushed.startswith("tgflow-unpushed/")
    assert git(ws.integration, "rev-parse", report.kept_unpushed) == unpushed
    assert ws.head() == git(origin, "rev-parse", "main")


def test_a_second_run_on_the_same_clone_waits_for_the_first(origin: Path, tmp_path: Path) -> None:
    """Across processes: a CLI run beside a deployment run must not reconcile under it."""
    import subprocess
    import sys
    import time

    ws = Workspace.open(str(origin), tmp_path / "ws")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from tasks_lib.git.locks import run_lock\n"
            "from tasks_lib.git.workspace import Workspace\n"
            f"ws = Workspace.open({str(origin)!r}, Path({str(tmp_path / 'ws')!r}))\n"
            "with run_lock(ws.root):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(2)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    waited_for: list[str] = []
    start = time.monotonic()
    with run_lock(ws.root, waited_for.append):
        assert time.monotonic() - start > 1.0  # in only once the first run let go
    assert len(waited_for) == 1 and f"pid {holder.pid}" in waited_for[0]
    holder.wait()
    start = time.monotonic()
    with run_lock(ws.root, waited_for.append):  # free again: no waiting
        pass
    assert len(waited_for) == 1 and time.monotonic() - start < 1


def test_commits_of_reads_refs_through_the_reader_without_a_command(
    origin: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    main = ws.head()
    git(ws.integration, "update-ref", "refs/tgflow/x/below", main)  # under a name asked for
    git(ws.integration, "tag", "-a", "-m", "a tag", "v1", main)
    git(ws.integration, "update-ref", "refs/tgflow/tagged", "refs/tags/v1")  # names a tag
    asked = ("refs/heads/main", "refs/tgflow/x", "refs/tgflow/tagged", "refs/heads/none")

    with counting() as commands:
        found = ws.commits_of(*asked)

    # A ref that names nothing is left out, the refs below an asked name are not it, a tag
    # is peeled to its commit (as rev-parse ^{commit} does); the clone's reader answers.
    assert found == {"refs/heads/main": main, "refs/tgflow/tagged": main}
    assert commands == []
    assert {ref: ws.ref_exists(ref) for ref in asked} == {ref: ref in found for ref in asked}


def test_update_refs_changes_all_or_nothing(origin: Path, tmp_path: Path) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    main = ws.head()
    git(ws.integration, "update-ref", "refs/tgflow/old", main)

    with pytest.raises(GitError):  # one ref has moved from where the caller read it
        ws.update_refs(
            {"refs/tgflow/new": main, "refs/tgflow/old": None}, {"refs/tgflow/old": "0" * 40}
        )
    assert ws.commits_of("refs/tgflow/new", "refs/tgflow/old") == {"refs/tgflow/old": main}

    with counting() as commands:  # the clone's ref writer: no command
        ws.update_refs(
            {"refs/tgflow/new": main, "refs/tgflow/old": None}, {"refs/tgflow/old": main}
        )
    assert ws.commits_of("refs/tgflow/new", "refs/tgflow/old") == {"refs/tgflow/new": main}
    assert commands == []


def test_a_rewritten_branch_replaces_its_backup_once_the_old_commits_are_rescued(
    origin: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    checkout = worktrees.start_task(ws, "r")
    write_files(checkout.path, {"r.txt": "r\n"})
    worktrees.commit_all(ws, checkout.path, "r work\n\nTgflow-Task: r")
    assert worktrees.push_branch(ws, "r")[0]
    first = git(origin, "rev-parse", "refs/heads/tgflow/r")
    git(checkout.path, "commit", "-q", "--amend", "-m", "r work, amended\n\nTgflow-Task: r")
    collected = worktrees.collect(ws, checkout.path)  # the old tip is rescued: it is not lost
    assert any("refs/tgflow/rescued/r/" in n for n in collected.notes)
    assert [r.startswith("refs/tgflow/rescued/r/") for r in collected.rescued] == [True]

    ok, output = worktrees.push_branch(ws, "r")  # a forced push (``+sha:ref``)

    assert ok, output
    amended = git(checkout.path, "rev-parse", "HEAD")
    assert git(origin, "rev-parse", "refs/heads/tgflow/r") == amended != first
    assert git(ws.integration, "rev-parse", "refs/remotes/origin/tgflow/r") == amended
    assert git(origin, "rev-parse", f"refs/tgflow/rescued/r/{first[:12]}") == first


@contextmanager
def counting() -> Iterator[list[list[str]]]:
    """The git commands run inside (every one goes through ``runner._execute``)."""
    commands: list[list[str]] = []
    original = runner._execute

    def execute(command: list[str], *args: Any) -> Any:
        commands.append(command)
        return original(command, *args)

    with mock.patch.object(runner, "_execute", execute):
        yield commands


def test_standing_on_base_skips_the_reset_only_while_the_worktree_is_as_tgflow_left_it(
    origin: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(str(origin), tmp_path / "ws")
    head = ws.reset_to(ws.base_ref())  # clean, as tgflow left it
    with counting() as commands:
        assert ws.stand_on(ws.base_ref()) == head
    assert not any("reset" in command for command in commands)

    (ws.integration / "stray.txt").write_text("left by someone\n")
    git(ws.integration, "add", "stray.txt")  # git rewrote the index since
    with counting() as commands:
        assert ws.stand_on(ws.base_ref()) == head
    assert any("reset" in command for command in commands)
    assert not (ws.integration / "stray.txt").exists()
    assert git(ws.integration, "status", "--porcelain") == ""


def test_is_ancestor_answers_as_git_does_for_parents_merges_and_strangers(
    origin: Path, tmp_path: Path
) -> None:
    """A parent is read from the commit itself, any other answer is git's, kept by the two
    commits: a ref that moves after is asked again, by its new commit."""
    ws = Workspace.open(str(origin), tmp_path / "ws")
    base = ws.head()
    wt = worktrees.start_task(ws, "a").path
    for n in range(3):
        (wt / f"{n}.txt").write_text(f"{n}\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-qm", f"c{n}")
    worktrees.collect(ws, wt)
    c0, c1, c2 = git(
        ws.integration, "rev-list", "--reverse", "refs/heads/tgflow/a", f"^{base}"
    ).split()
    git(
        ws.integration,
        "update-ref",
        "refs/tgflow/stranger",
        git(ws.integration, "commit-tree", "-m", "x", f"{base}^{{tree}}"),
    )

    assert ws.is_ancestor(base, c0) and ws.is_ancestor(c0, c1)  # parents
    assert ws.is_ancestor(base, "refs/heads/tgflow/a") and ws.is_ancestor(c2, c2)
    assert not ws.is_ancestor(c2, c0) and not ws.is_ancestor(c1, c0)
    assert not ws.is_ancestor("refs/tgflow/stranger", c2)
    assert not ws.is_ancestor("refs/tgflow/none", c2)
    git(ws.integration, "update-ref", "refs/heads/tgflow/a", c0)
    assert not ws.is_ancestor(c1, "refs/heads/tgflow/a")  # the ref moved: its new commit


def test_a_fetch_refused_for_a_ref_a_push_moved_meanwhile_is_made_again(
    origin: Path, tmp_path: Path
) -> None:
    """A node's push records its branch in the tracking refs outside the merge lock; another
    node's fetch that read that ref before is refused by git for it, and fetches again."""
    ws = Workspace.open(str(origin), tmp_path / "ws")
    original, fetches = runner._execute, []

    def execute(command: list[str], *args: Any) -> Any:
        if "fetch" in command:
            fetches.append(command)
            if len(fetches) == 1:  # what git says when the ref moved under it
                moved = f"is at {'1' * 40} but expected {'2' * 40}"
                return 1, "", f"error: cannot lock ref 'refs/remotes/origin/tgflow/a': {moved}"
        return original(command, *args)

    with mock.patch.object(runner, "_execute", execute):
        ws.fetch()
    assert len(fetches) == 2

    fetches.clear()
    refused = mock.patch.object(runner, "_execute", lambda c, *a: (128, "", "fatal: no origin"))
    with refused, pytest.raises(GitError, match="no origin"):  # any other failure is raised
        ws.fetch()
