"""A checkout that is done with is parked and its files reused by the next task: that task
sees exactly what a fresh clone would give it (no file, ref, hook or setting of the task
before), and a spare that is not as tgflow left it, or that cannot be cleaned, is never
reused: the task gets a fresh clone instead."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, write_files
from helpers.workspaces import open_ws

from tasks_lib.git import worktrees
from tasks_lib.git.links import git_dir_of, link_text, spares_dir_of, tmp_dir_of
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace

FILES = {
    "README.md": "demo\n",
    ".gitignore": "build/\n*.log\n",
    "src/app.py": "APP = 1\n",
    "src/lib/util.py": "UTIL = 1\n",
    "tasks/.keep": "",
}
STAMP = 1_000_000_000


@pytest.fixture
def origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small repository, reused as a large one would be (``REUSE_FROM_FILES``)."""
    monkeypatch.setattr(worktrees, "REUSE_FROM_FILES", 0)
    return make_origin(tmp_path, FILES)


def mark(checkout: Path) -> int:
    """Tells a checkout's files from a new clone's: a README dated long ago (git leaves a file
    whose content is right as it is, so a reused checkout keeps the date)."""
    os.utime(checkout / "README.md", (STAMP, STAMP))
    return STAMP


def dated(checkout: Path) -> int:
    return int((checkout / "README.md").stat().st_mtime)


def spares(ws: Workspace) -> list[str]:
    pool = spares_dir_of(ws.worktree_path("any"))
    return sorted(p.name for p in pool.iterdir()) if pool.is_dir() else []


def files_on_disk(checkout: Path) -> dict[str, str]:
    return {
        str(p.relative_to(checkout)): p.read_text().strip()
        for p in checkout.rglob("*")
        if p.is_file() and p.name != ".git"
    }


def layout(git_dir: Path, name: str) -> list[str]:
    """The git dir's entries, the task's name written as NAME: two checkouts compare."""
    return sorted(str(p.relative_to(git_dir)).replace(name, "NAME") for p in git_dir.rglob("*"))


def assert_fresh(checkout: worktrees.TaskCheckout, commit: str) -> None:
    """What a newly cloned checkout of ``commit`` on the task branch holds, and nothing else."""
    path, git_dir = checkout.path, git_dir_of(checkout.path)
    assert (path / ".git").read_text() == link_text(path)
    assert git(path, "symbolic-ref", "HEAD") == f"refs/heads/{checkout.branch}"
    assert git(path, "rev-parse", "HEAD") == commit
    assert git(path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    tree = git(path, "ls-tree", "-r", "--name-only", "HEAD").split("\n")
    assert files_on_disk(path) == {rel: git(path, "show", f"HEAD:{rel}") for rel in tree}
    assert {line[0] for line in git(path, "ls-files", "-v").split("\n")} == {"H"}
    assert git(path, "for-each-ref", "--format=%(refname)") == f"refs/heads/{checkout.branch}"
    assert not (git_dir / "hooks").exists()  # no template: no hook, not even a sample
    assert (git_dir / "config").read_bytes() == git_dir.with_suffix(".config").read_bytes()
    assert (git_dir / "info" / "exclude").read_text() == "/.tgflow/\n"
    assert not tmp_dir_of(path).exists()


def test_a_reused_checkout_holds_nothing_of_the_task_before(origin: Path, tmp_path: Path) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    before = worktrees.start_task(ws, "before")
    readme = mark(before.path)
    write_files(before.path, {"committed.txt": "c\n"})
    worktrees.commit_all(ws, before.path, "before\n\nTgflow-Task: before")
    mine = git(before.path, "rev-parse", "HEAD")
    outside = tmp_path / "outside"
    write_files(outside, {"util.py": "not tgflow's\n"})
    # what an agent can leave: files of each kind, refs, a hook, settings, a lock, temp files
    write_files(
        before.path,
        {
            "untracked.txt": "u\n",
            "build/out.o": "ignored\n",
            "debug.log": "ignored\n",
            ".tgflow/exit.md": "safe exit\n",
            "src/app.py": "APP = 'changed, hidden from git status'\n",
            "nested/file.txt": "n\n",
        },
    )
    git(before.path, "update-index", "--assume-unchanged", "src/app.py")
    git(before.path / "nested", "init", "-q")
    git(before.path, "rm", "-rq", "--cached", "src/lib")
    (before.path / "src" / "lib" / "util.py").unlink()
    (before.path / "src" / "lib").rmdir()
    (before.path / "src" / "lib").symlink_to(outside)
    git(before.path, "branch", "experiment")
    git(before.path, "tag", "v-before")
    git(before.path, "config", "core.autocrlf", "true")
    hook = git_dir_of(before.path) / "hooks" / "pre-commit"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\necho planted\n")
    hook.chmod(0o755)
    (git_dir_of(before.path) / "index.lock").write_text("")
    write_files(tmp_dir_of(before.path), {"scratch": "temp\n"})

    worktrees.cleanup(ws, "before", push=False)
    assert not before.path.exists() and spares(ws) == ["0"]
    after = worktrees.start_task(ws, "after")

    assert dated(after.path) == readme  # the spare's files, not a new checkout
    assert spares(ws) == []
    assert_fresh(after, git(ws.integration, "rev-parse", "main"))
    assert mine not in git(after.path, "rev-list", "--all", "--reflog").split("\n")
    assert (outside / "util.py").read_text() == "not tgflow's\n"
    fresh = worktrees.start_task(ws, "fresh")  # the pool is empty: a new clone
    assert layout(git_dir_of(after.path), "after") == layout(git_dir_of(fresh.path), "fresh")
    assert (git_dir_of(after.path) / "config").read_bytes() == (
        git_dir_of(fresh.path) / "config"
    ).read_bytes()


def test_a_resumed_branch_is_checked_out_in_a_reused_checkout(origin: Path, tmp_path: Path) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    kept = worktrees.start_task(ws, "kept")
    write_files(kept.path, {"kept.txt": "work to resume\n"})
    worktrees.commit_all(ws, kept.path, "kept work\n\nTgflow-Task: kept")
    tip = git(ws.integration, "rev-parse", kept.branch)
    other = worktrees.start_task(ws, "other")
    write_files(other.path, {"other.txt": "o\n", "build/x": "x\n"})
    readme = mark(other.path)
    worktrees.save_work(ws, kept.path, "wip\n\nTgflow-Task: kept")
    worktrees.remove_worktree(ws, "kept")  # a failure: the branch is kept
    worktrees.cleanup(ws, "other", push=False)  # parked last: the next one taken

    resumed = worktrees.start_task(ws, "kept")

    assert resumed.resumed and dated(resumed.path) == readme
    assert_fresh(resumed, tip)
    assert (resumed.path / "kept.txt").read_text() == "work to resume\n"
    assert spares(ws) == ["0"]  # kept's own checkout waits for another task


@pytest.mark.parametrize(
    "damage",
    ["git dir deleted", "HEAD garbage", ".git elsewhere"],
)
def test_a_checkout_with_a_broken_repository_is_deleted_not_parked(
    origin: Path, tmp_path: Path, damage: str
) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    broken = worktrees.start_task(ws, "broken")
    readme = mark(broken.path)
    git_dir = git_dir_of(broken.path)
    if damage == "git dir deleted":
        subprocess.run(["rm", "-rf", str(git_dir)], check=True)
    elif damage == "HEAD garbage":
        (git_dir / "HEAD").write_text("garbage\n")
    else:
        (broken.path / ".git").write_text(f"gitdir: {tmp_path / 'elsewhere.git'}\n")

    assert worktrees.remove_worktree(ws, "broken")
    assert spares(ws) == [] and not git_dir.exists()
    after = worktrees.start_task(ws, "after")

    assert dated(after.path) != readme
    assert_fresh(after, git(ws.integration, "rev-parse", "main"))


@pytest.mark.parametrize("change", ["a .git naming elsewhere", "a repository", "a symlink"])
def test_a_spare_changed_while_parked_is_not_reused(
    origin: Path, tmp_path: Path, change: str
) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    worktrees.start_task(ws, "before")
    worktrees.cleanup(ws, "before", push=False)
    spare = spares_dir_of(ws.worktree_path("before")) / "0"
    readme = mark(spare)
    elsewhere = tmp_path / "elsewhere"
    write_files(elsewhere, {"theirs.txt": "not tgflow's\n"})
    if change == "a .git naming elsewhere":
        (spare / ".git").write_text(f"gitdir: {elsewhere}\n")
    elif change == "a repository":
        git(spare, "init", "-q")  # its config would rule the commands run there
    else:
        subprocess.run(["rm", "-rf", str(spare)], check=True)
        spare.symlink_to(elsewhere)

    after = worktrees.start_task(ws, "after")

    assert dated(after.path) != readme
    assert [s for s in spares(ws) if s.isdigit()] == []
    assert_fresh(after, git(ws.integration, "rev-parse", "main"))
    assert files_on_disk(elsewhere) == {"theirs.txt": "not tgflow's"}


def test_a_run_killed_while_reusing_a_spare_leaves_no_work_to_save(
    origin: Path, tmp_path: Path
) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    before = worktrees.start_task(ws, "before")
    write_files(before.path, {"left.txt": "of the task before\n"})
    worktrees.cleanup(ws, "before", push=False)
    # start_task of "after", killed once its repository is made, before the files are cleaned
    path, branch = ws.worktree_path("after"), "tgflow/after"
    git(ws.integration, "branch", branch, "main")
    staged = worktrees._claim(path)
    assert staged is not None
    worktrees._clone(ws, branch, path, files=staged)

    report = reconcile(Workspace.open(str(origin), tmp_path / "ws"))  # the next run

    assert report.saved_work == [] and report.resumable == {}
    after = worktrees.start_task(ws, "after")
    assert not after.resumed
    assert_fresh(after, git(ws.integration, "rev-parse", "main"))


@contextmanager
def undeletable(path: Path) -> Iterator[None]:
    """A file nobody here can delete: immutable for root (who ignores permissions), else in
    a read-only folder. Made deletable again wherever it went, for the test's clean-up."""
    write_files(path.parent, {path.name: "stuck\n"})
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not allowed here")
    if not root:
        path.parent.chmod(0o555)
    try:
        yield
    finally:
        for found in path.parents[3].rglob(path.name):
            if root:
                subprocess.run(["chattr", "-i", str(found)], check=True)
            else:
                found.parent.chmod(0o755)


def test_a_spare_that_cannot_be_cleaned_gives_way_to_a_fresh_clone(
    origin: Path, tmp_path: Path
) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    before = worktrees.start_task(ws, "before")
    readme = mark(before.path)
    with undeletable(before.path / "stuck" / "left-by-the-agent"):
        worktrees.cleanup(ws, "before", push=False)

        after = worktrees.start_task(ws, "after")

        assert dated(after.path) != readme
        assert_fresh(after, git(ws.integration, "rev-parse", "main"))
        assert [s for s in spares(ws) if s.isdigit()] == []
        assert [s for s in spares(ws) if s.startswith("unusable-")] != []  # kept aside


def test_two_tasks_starting_at_once_share_out_one_spare(origin: Path, tmp_path: Path) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    before = worktrees.start_task(ws, "before")
    readme = mark(before.path)
    write_files(before.path, {"left.txt": "l\n"})
    worktrees.cleanup(ws, "before", push=False)
    ready = threading.Barrier(2)
    started: dict[str, worktrees.TaskCheckout] = {}

    def start(task_id: str) -> None:
        ready.wait()
        started[task_id] = worktrees.start_task(ws, task_id)

    threads = [threading.Thread(target=start, args=(t,)) for t in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(started) == ["x", "y"]
    reused = [t for t, c in started.items() if dated(c.path) == readme]
    assert len(reused) == 1 and spares(ws) == []
    for checkout in started.values():
        assert_fresh(checkout, git(ws.integration, "rev-parse", "main"))


def test_spares_outlive_the_run_and_their_number_is_capped(origin: Path, tmp_path: Path) -> None:
    ws = open_ws(origin, tmp_path / "ws")
    ids = [f"t{n}" for n in range(worktrees.MAX_SPARES + 1)]
    for task_id in ids:
        worktrees.start_task(ws, task_id)
    last = mark(ws.worktree_path(ids[-2]))
    for task_id in ids:
        assert worktrees.remove_worktree(ws, task_id)
    assert spares(ws) == [str(n) for n in range(worktrees.MAX_SPARES)]

    again = open_ws(origin, tmp_path / "ws")  # the next run: reconcile leaves spares alone
    assert len(spares(again)) == worktrees.MAX_SPARES
    checkout = worktrees.start_task(again, "next")

    assert dated(checkout.path) == last  # the last parked is taken first
    assert_fresh(checkout, git(again.integration, "rev-parse", "main"))


def test_a_small_repository_gets_fresh_clones_and_parks_nothing(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five files: below the size where making a spare exact costs less than a clone.
    monkeypatch.setattr(worktrees, "REUSE_FROM_FILES", len(FILES) + 1)
    ws = open_ws(origin, tmp_path / "ws")
    first = worktrees.start_task(ws, "one").path
    mark(first)
    worktrees.remove_worktree(ws, "one")
    assert spares(ws) == []
    second = worktrees.start_task(ws, "two").path
    assert dated(second) != STAMP  # a new clone's file, not the one marked
    monkeypatch.setattr(worktrees, "REUSE_FROM_FILES", len(FILES))  # at the bound: reused
    worktrees.remove_worktree(ws, "two")
    assert spares(ws) == ["0"]


def test_a_checkouts_repository_copied_from_the_first_is_what_git_init_made(
    origin: Path, tmp_path: Path
) -> None:
    """The first checkout's repository is made by ``git init``; the next ones are written from
    what it made (no command): the same files, the same config, HEAD on their own branch."""
    ws = open_ws(origin, tmp_path / "ws")
    first, second = worktrees.start_task(ws, "first"), worktrees.start_task(ws, "second")
    made, copied = git_dir_of(first.path), git_dir_of(second.path)
    assert layout(copied, "second") == layout(made, "first")
    assert (copied / "config").read_bytes() == (made / "config").read_bytes()
    assert (copied / "HEAD").read_text() == f"ref: refs/heads/{second.branch}\n"
    assert_fresh(second, ws.commit(ws.base_ref()))


def test_what_a_git_dir_held_before_its_init_is_never_copied_to_the_next(
    origin: Path, tmp_path: Path
) -> None:
    """``git init`` keeps what a git dir already holds: a first repository made over one (a
    killed run's, should any reach it) is not the one the next are copied from."""
    ws = open_ws(origin, tmp_path / "ws")
    first, second = tmp_path / "first.git", tmp_path / "second.git"
    (first / "refs" / "heads").mkdir(parents=True)
    (first / "refs" / "heads" / "left-over").write_text(ws.commit(ws.base_ref()) + "\n")
    for git_dir in (first, second):
        (tmp_path / f"{git_dir.stem}-files").mkdir()
        worktrees._init(ws, "tgflow/x", git_dir, tmp_path / f"{git_dir.stem}-files")
    assert (first / "HEAD").is_file() and (second / "HEAD").is_file()
    assert not (second / "refs" / "heads" / "left-over").exists()
