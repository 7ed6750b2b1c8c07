"""A task's checkout and branch, from its start (or resumption) to its removal.

An agent works in a checkout of its own: a clone of tgflow's clone (``git clone --shared``:
objects borrowed, nothing copied) with no remote, its git dir apart under ``clones/``. What
the agent does to that repository (its config, hooks, refs, remotes, a push) stays there;
tgflow's clone changes only when tgflow *collects* the work: it fetches the checkout's HEAD
into the task branch and keeps every other commit the agent made on a rescue ref (backed up
on the origin), whatever state the agent left (a detached HEAD, commits on another branch, a
stale lock, a rewritten config, a deleted ``.git``).

Work is never thrown away: a checkout that goes first has its leftovers committed and
collected, and a branch that holds work not on base is resumed by the next run (which always
hands it to the agent again). A branch the user deleted on the origin stays deleted: tgflow
keeps its copy aside (``backup``), never resumes or pushes it. A branch named like tgflow's
that tgflow did not make (no commit of it carries the task trailer) is never resumed, merged
or deleted. Nothing here needs ``merge_lock``: a task moves only its own refs, starting from
the settled base, and writes to the clone's config take ``config_lock``.

Checking 5,000 files out costs most of a new checkout, so in a repository of at least
``REUSE_FROM_FILES`` files a checkout that is done with (merged, or failed with its work
saved) is parked under ``spare/`` instead of deleted, its files only: its repository, temp
dir and ``.git`` link go as before. The next task takes the last one parked: a new
repository (cloned without files, exactly as a fresh checkout's), an index read from the
task's commit (the files are hashed, not rewritten: nothing of the old index survives, no
assume-unchanged or skip-worktree bit), then ``git clean -ffdx`` and ``git reset --hard``,
and nothing may be left that ``git status`` would show. Whatever goes wrong on the way, the
spare is put aside and deleted, and the task gets a fresh clone. ``start_task`` may run in
several threads at once (without ``merge_lock``): it only moves its own task's refs, and one
lock makes taking a spare, and parking one, atomic."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks_lib.git import WorkspaceError
from tasks_lib.git.backup import set_aside_locally
from tasks_lib.git.checkpoint import FETCHED_CHECKPOINTS, drop_checkpoint
from tasks_lib.git.links import git_dir_of, is_linked, link_text, spares_dir_of, tmp_dir_of
from tasks_lib.git.runner import run_git
from tasks_lib.git.workspace import BRANCH_PREFIX, SAFE_EXIT_DIR, TASK_TRAILER, Workspace, slug

WIP_PREFIX = "tgflow: wip"  # unfinished work tgflow committed for the agent
# branch.<name>.<this> in the clone's config: a commit of the branch the origin held (tgflow
# pushed it or took the branch from there). Deleting the branch drops the key with it.
PUBLISHED_KEY = "tgflowpublished"
RESCUED_REFS = "refs/tgflow/rescued/"  # commits an agent left off its task branch (and origin)
_SESSION_REFS = "refs/tgflow/session/"  # a checkout's refs while they are being collected
# What git leaves when a command dies mid-way; after a session nothing of the agent's runs.
_LOCKS = ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "config.lock", "packed-refs.lock")
# Each spare came from a node that ran, so peak parallelism bounds the pool; this is in case.
MAX_SPARES = 8
# Below this many files a fresh clone costs less than making a spare exact (measured on
# /dev/shm: fresh 22 / 41 / 61 / 110 / 256 ms, reused 35 / 45 / 47 / 56 / 140 ms at 50 /
# 500 / 1,000 / 2,000 / 5,000 files): the crossover lies between 500 and 1,000.
REUSE_FROM_FILES = 750
_POOL_LOCK = threading.Lock()  # taking and parking spares, between the node threads
_HEAD = re.compile(rb"ref: refs/heads/\S+\n?|[0-9a-f]{40}\n?|[0-9a-f]{64}\n?")

log = logging.getLogger(__name__)


class ForeignBranch(WorkspaceError):
    """A branch named like a task's that tgflow did not make: a person's, never touched."""


@dataclass
class TaskCheckout:
    path: Path
    branch: str
    resumed: bool  # the branch already held commits that are not on base
    notes: list[str] = field(default_factory=list)


def start_task(ws: Workspace, task_id: str, base: str | None = None) -> TaskCheckout:
    """A checkout for the task: on its existing branch when that holds work (resume), else on
    a new branch from ``base`` (by default the settled base). The origin's copy counts: the
    clone is only a cache, so a branch deleted there is set aside, not resumed."""
    branch, path = ws.branch(task_id), ws.worktree_path(task_id)
    notes: list[str] = []
    if path.exists() or git_dir_of(path).exists():
        notes += retire_worktree(ws, path)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    checkpointed = f"{FETCHED_CHECKPOINTS}{slug(task_id)}"
    found = ws.commits_of(local, remote, checkpointed)  # through the reader: no command
    # Only a branch the origin no longer has can have been deleted there.
    gone = local in found and remote not in found
    dropped = drop_if_deleted_on_origin(ws, branch) if gone else None
    if dropped:
        found.pop(local)
        notes.append(
            f"{branch} was deleted on the origin: not resumed, its commits kept in tgflow's "
            f"clone as {dropped}; starting afresh from {ws.base}"
        )
    has_local, has_remote = local in found, remote in found
    if has_remote and not made_by_tgflow(ws, remote):
        raise ForeignBranch(
            f"the origin has a branch {branch} that tgflow did not make (no commit of it "
            f"carries a {TASK_TRAILER} trailer), so task {task_id!r} cannot use that name; "
            f"rename that branch on {ws.origin}, or give the task another id"
        )
    if has_remote and ws.commits_ahead(remote):
        if not has_local:
            ws.git(ws.integration, "branch", "--quiet", "--no-track", branch, remote)
            has_local = True
        elif ws.is_ancestor(local, remote):
            ws.git(ws.integration, "branch", "--quiet", "-f", branch, remote)
        elif not ws.is_ancestor(remote, local):
            notes.append(f"{branch} and origin/{branch} diverged; continuing from the local one")
        if ws.is_ancestor(remote, local):
            _mark_published(ws, branch, found[remote])
    if checkpointed in found and _checkpoint_ahead(ws, task_id, local if has_local else None):
        ws.git(ws.integration, "update-ref", local, checkpointed)
        has_local = True
        notes.append(
            f"took {branch} from its checkpoint on the origin (what a session had done when "
            "its run stopped)"
        )
    kept = ws.commits_ahead(local) if has_local else []
    resumed = bool(kept)
    if resumed:
        notes.append(f"resumed {branch}: it already held {len(kept)} commit(s) not on {ws.base}")
    else:
        # From the settled base: base itself may hold a merge still being validated.
        start = base or ws.settled()
        ws.update_refs({f"refs/heads/{branch}": ws.commit(start)})
    _check_out(ws, branch, path)
    return TaskCheckout(path, branch, resumed, notes)


def _checkpoint_ahead(ws: Workspace, task_id: str, local: str | None) -> bool:
    """The task's checkpoint on the origin (``git/checkpoint.py``), which the caller found,
    holds work beyond its branch, on top of it: a session's, whose machine stopped before the
    branch was saved."""
    checkpointed = f"{FETCHED_CHECKPOINTS}{slug(task_id)}"
    if not ws.commits_ahead(checkpointed):
        return False
    if local is None:
        return True
    return ws.is_ancestor(local, checkpointed) and not ws.is_ancestor(checkpointed, local)


def made_by_tgflow(ws: Workspace, ref: str) -> bool:
    """tgflow's branches carry its trailer: on a commit not on base (every commit made for a
    task has it), or on the tip of a merged branch. A person's experiment or bookmark named
    like a task branch has none, so tgflow never resumes, merges or deletes it."""
    ahead = ws.commits_ahead(ref)
    tips = ahead or [ws.commit(ref)]
    messages = ws.git(ws.integration, "show", "-s", "--format=%B%x00", *tips)
    return f"\n{TASK_TRAILER}: " in "\n" + messages


def _check_out(ws: Workspace, branch: str, path: Path) -> None:
    """A spare's files when one is there and reusing it works, else a fresh clone: a spare
    is only ever a saving, so no failure of it reaches the task. Either way the task's temp
    dir starts empty."""
    shutil.rmtree(tmp_dir_of(path), ignore_errors=True)
    staged = _claim(path) if worth_reusing(ws) else None
    if staged is not None:
        try:
            if _as_parked(staged):
                _reuse(ws, branch, path, staged)
                return
            log.warning("the spare checkout taken for %s was changed while parked", path.name)
        except (OSError, WorkspaceError) as e:
            log.warning("could not reuse a spare checkout for %s: %s", path.name, e)
        _discard(path)
    _clone(ws, branch, path)


def worth_reusing(ws: Workspace) -> bool:
    """Base has ``REUSE_FROM_FILES`` files or more: as many as the clone's index holds, read
    from its header (an index that cannot be read counts as large: reuse is the safe side of
    a saving, never of correctness)."""
    try:
        with (ws.integration / ".git" / "index").open("rb") as index:
            header = index.read(12)
    except OSError:
        return True
    if len(header) < 12 or header[:4] != b"DIRC":
        return True
    return int.from_bytes(header[8:12], "big") >= REUSE_FROM_FILES


def _claim(path: Path) -> Path | None:
    """The last spare parked (the likeliest to be close to base), moved into the task's temp
    dir, where it is made the task's checkout (``_reuse``). The rename is atomic; the lock
    keeps two threads from picking the same spare."""
    staged = tmp_dir_of(path) / "spare"
    with _POOL_LOCK:
        spares = _spares(spares_dir_of(path))
        if not spares:
            return None
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            spares[-1].rename(staged)
        except OSError:
            return None
    return staged


def _spares(pool: Path) -> list[Path]:
    """The parked checkouts, in the order they were parked."""
    if not pool.is_dir():
        return []
    return sorted((p for p in pool.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _as_parked(staged: Path) -> bool:
    """Parking leaves a plain directory without ``.git``: anything else means someone was
    there since, and git must not run on what they left."""
    dotgit = staged / ".git"
    return (
        staged.is_dir() and not staged.is_symlink() and not (dotgit.exists() or dotgit.is_symlink())
    )


def _reuse(ws: Workspace, branch: str, path: Path, staged: Path) -> None:
    """A spare's files made exactly the checkout a fresh clone would be: a new repository
    (nothing of the old one: refs, reflogs, hooks, config, locks), an index read from the
    branch, every file that differs rewritten and every other one removed. It becomes
    ``path`` only then: a run killed half-way leaves nothing a later run would take for a
    checkout with work to save."""
    _clone(ws, branch, path, files=staged)  # the index from the branch: the files hashed
    run_git(staged, "clean", "-ffdxq")
    run_git(staged, "reset", "--quiet", "--hard")
    (git_dir_of(path) / "ORIG_HEAD").unlink(missing_ok=True)  # the reset's own, not the task's
    left = run_git(staged, "status", "--porcelain", "--ignored", "--untracked-files=all").out
    if left:
        raise WorkspaceError(f"files of the previous task are still there: {left[:200]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(path)
    shutil.rmtree(tmp_dir_of(path))


def _discard(path: Path) -> None:
    """A spare that could not be reused leaves the task's paths first (its temp dir holds
    it), so that what cannot be deleted of it (a file an agent made undeletable) never
    blocks the fresh clone; then what was made for it goes."""
    tmp = tmp_dir_of(path)
    if tmp.exists():
        aside = spares_dir_of(path) / f"unusable-{time.time_ns()}"
        tmp.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    _remove(path)


def _park(path: Path) -> None:
    """A checkout done with becomes a spare: its files, without ``.git``, under ``spare/``.
    Left where it is (to be deleted, as before) when the pool is full or the repository is
    not as tgflow left it: its link, its HEAD. Only renames: the caller holds the merge lock."""
    if path.is_symlink() or not is_linked(path) or not _sane_head(git_dir_of(path)):
        return
    (path / ".git").unlink()
    pool = spares_dir_of(path)
    with _POOL_LOCK:
        spares = _spares(pool)
        if len(spares) < MAX_SPARES:
            with contextlib.suppress(OSError):  # e.g. another file system: deleted then
                pool.mkdir(exist_ok=True)
                path.rename(pool / str(int(spares[-1].name) + 1 if spares else 0))


def _sane_head(git_dir: Path) -> bool:
    """HEAD as git writes it (a branch, or a commit): anything else means the repository
    was broken, by the agent or a git killed mid-way, and its files are not worth keeping."""
    head = git_dir / "HEAD"
    if head.is_symlink() or not head.is_file() or head.stat().st_size > 100:
        return False
    return _HEAD.fullmatch(head.read_bytes()) is not None


def _clone(ws: Workspace, branch: str, path: Path, files: Path | None = None) -> None:
    """The agent's own repository: borrows the clone's objects, holds only the task branch,
    has no remote (nothing to push to) and a config tgflow wrote (restored after a session).
    ``files``: a spare's, to become ``path`` (``_reuse``): only its index is read then, from
    the branch, and no file is written.

    What ``git clone --shared`` would make, less its remote, in one command (the reset; the
    clone and the removal of its remote were two, and dearer): a new repository on the
    branch's name (``_init``), the clone's objects borrowed (``info/alternates``, as
    ``--shared`` writes it), its objects never collected (``gc.auto = 0``: they must stay
    where tgflow fetches them from), then a reset onto the branch's commit."""
    git_dir, worktree = git_dir_of(path), files or path
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    worktree.mkdir(parents=True, exist_ok=True)
    sha = ws.commit(f"refs/heads/{branch}")
    _init(ws, branch, git_dir, worktree)
    objects = ws.integration.resolve() / ".git" / "objects"
    (git_dir / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{objects}\n", encoding="utf-8")
    with (git_dir / "config").open("a", encoding="utf-8") as config:
        config.write("[gc]\n\tauto = 0\n")
    (worktree / ".git").write_text(link_text(path), encoding="utf-8")
    run_git(worktree, "reset", "--quiet", *([] if files else ["--hard"]), sha)
    exclude = git_dir / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text(f"/{SAFE_EXIT_DIR}/\n", encoding="utf-8")
    shutil.copyfile(git_dir / "config", _clean_config(path))


# Per workspace root: a new git dir as ``git init --template=`` made it there, less its HEAD
# (relative path -> contents, None for a folder).
_NEW_GIT_DIR: dict[Path, dict[str, bytes | None]] = {}


def _init(ws: Workspace, branch: str, git_dir: Path, worktree: Path) -> None:
    """A new repository at ``git_dir`` on ``branch`` (unborn), for ``worktree``: made by
    ``git init`` the first time in a workspace, then copied from what that made (read back
    at once, before any agent could touch it), with its HEAD on ``branch``. A handful of
    small files, written in well under a millisecond where the command costs 3-4 ms. No
    template: nothing of a person's ``init.templateDir`` (hooks) reaches the agent's repo."""
    made = _NEW_GIT_DIR.get(ws.root)
    if made is None:
        fresh = not git_dir.exists()  # else git init keeps what is there: nothing to copy
        run_git(
            worktree, "init", "--quiet", "--template=", "--initial-branch", branch,
            "--separate-git-dir", str(git_dir), ".",
        )  # fmt: skip
        if fresh:
            _NEW_GIT_DIR[ws.root] = {
                item.relative_to(git_dir).as_posix(): None if item.is_dir() else item.read_bytes()
                for item in sorted(git_dir.rglob("*"))
                if item.name != "HEAD" or item.parent != git_dir
            }
        return
    git_dir.mkdir(exist_ok=True)
    for rel, data in made.items():  # sorted: a folder before what it holds
        if data is None:
            (git_dir / rel).mkdir(exist_ok=True)
        else:
            (git_dir / rel).write_bytes(data)
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n", encoding="utf-8")


def _clean_config(path: Path) -> Path:
    return git_dir_of(path).with_suffix(".config")


def reclaim(path: Path) -> list[str]:
    """After the agent is gone: the checkout's repository is tgflow's again. Its config is put
    back (an agent's filter, fsmonitor or worktree setting would run or write where tgflow
    works), locks a killed git left are removed; what was repaired is returned."""
    notes: list[str] = []
    git_dir, clean = git_dir_of(path), _clean_config(path)
    if clean.is_file() and (git_dir / "HEAD").is_file():
        config = git_dir / "config"
        if not config.is_file() or config.read_bytes() != clean.read_bytes():
            shutil.copyfile(clean, config)
            notes.append(f"restored the git config of {path.name} (the agent had changed it)")
    stale = [git_dir / name for name in _LOCKS if (git_dir / name).exists()]
    stale += list((git_dir / "refs").rglob("*.lock")) if (git_dir / "refs").is_dir() else []
    for lock in stale:
        lock.unlink()
    if stale:
        names = ", ".join(str(p.relative_to(git_dir)) for p in stale)
        notes.append(f"removed stale git locks in {path.name} left by the agent: {names}")
    return notes


@dataclass
class Collected:
    """What ``collect`` did: its notes, and the rescue refs it made (they reach the origin
    with the branch's backup, ``push_branch``)."""

    notes: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)


def collect(ws: Workspace, path: Path) -> Collected:
    """The checkout's work into tgflow's clone: its HEAD (whatever branch, or none) becomes
    the task branch; commits the agent left elsewhere (another branch, a tip the branch no
    longer contains) are kept under ``refs/tgflow/rescued/`` and on the origin."""
    git_dir, name = git_dir_of(path), path.name
    branch = f"refs/heads/{BRANCH_PREFIX}{name}"
    if not (git_dir / "HEAD").is_file():
        return Collected()
    staged = f"{_SESSION_REFS}{name}/"
    fetched = run_git(
        ws.integration, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(git_dir),
        f"+HEAD:{staged}HEAD", f"+refs/heads/*:{staged}heads/*", check=False,
    )  # fmt: skip
    listed = _refs(ws, staged, branch)  # the branch and what was fetched, one command
    found = {ref: sha for ref, sha in listed.items() if ref.startswith(staged)}
    start = listed.get(branch)  # None: no task branch, nothing to collect into
    changes: dict[str, str | None] = dict.fromkeys(found)  # what was fetched goes, always
    notes: list[str] = []
    head = found.get(f"{staged}HEAD")
    if start is not None and (fetched.status != 0 or head is None):
        notes.append(f"could not collect the work in {path} (its HEAD is unborn or broken)")
    elif start is not None and head is not None:
        if head != start:
            if not ws.is_ancestor(start, head):
                notes.append(_rescue(changes, name, start, "the task branch before the session"))
            changes[branch] = head
        for ref, sha in found.items():
            if not ref.startswith(f"{staged}heads/") or sha == head:
                continue
            # ``head``: the branch, once the changes below are made
            if ws.git(ws.integration, "rev-list", "-1", sha, "--not", head, ws.base_ref()):
                what = f"branch {ref.removeprefix(staged + 'heads/')}"
                notes.append(_rescue(changes, name, sha, what))
    # One transaction: the branch moves only from where it was read, rescues come with it.
    ws.update_refs(changes, {branch: start} if start is not None and branch in changes else None)
    return Collected(notes, [ref for ref in changes if ref.startswith(RESCUED_REFS)])


def _rescue(changes: dict[str, str | None], name: str, sha: str, what: str) -> str:
    """Kept in the clone (``changes`` gets the ref); ``push_branch`` (``push_rescued``) backs
    it up on the origin."""
    ref = f"{RESCUED_REFS}{name}/{sha[:12]}"
    changes[ref] = sha
    return f"kept commits the agent left off the task branch ({what}) as {ref}"


def push_rescued(ws: Workspace, task_id: str, refs: Sequence[str] | None = None) -> list[str]:
    """The task's rescued commits onto the origin, under the same refs (pushing one the
    origin has is a no-op); what could not be pushed, one line each. ``refs``: the task's
    rescue refs, when the caller has listed them."""
    refused = []
    for ref in _refs(ws, rescued_prefix(task_id)) if refs is None else refs:
        pushed = ws.push(f"{ref}:{ref}")
        if pushed.status != 0:
            refused.append(f"could not back {ref} up on the origin: {pushed.output}")
    return refused


def rescued_prefix(task_id: str) -> str:
    return f"{RESCUED_REFS}{slug(task_id)}/"


def _refs(ws: Workspace, *patterns: str) -> dict[str, str]:
    """Ref name -> sha of the refs these ``for-each-ref`` patterns match (a ref, and the refs
    under it)."""
    out = ws.git(ws.integration, "for-each-ref", "--format=%(refname) %(objectname)", *patterns)
    return dict(line.split(" ", 1) for line in out.split("\n") if line)


def _mark_published(ws: Workspace, branch: str, sha: str) -> None:
    with ws.writing_config():
        ws.git(ws.integration, "config", f"branch.{branch}.{PUBLISHED_KEY}", sha)


def drop_if_deleted_on_origin(ws: Workspace, branch: str) -> str | None:
    """A local branch whose work the origin held and whose origin copy is gone was deleted
    there by a person: set it aside (the ref is returned) so that no run resumes or pushes
    it back. A branch the origin never had (never pushed) is not touched."""
    local = f"refs/heads/{branch}"
    if not ws.ref_exists(local) or ws.ref_exists(f"refs/remotes/origin/{branch}"):
        return None
    key = f"branch.{branch}.{PUBLISHED_KEY}"
    published = ws.git(ws.integration, "config", "--get", key, check=False)
    if not published or published not in ws.commits_ahead(local):
        return None  # never on the origin, or a stale key of an earlier, merged branch
    return set_aside_locally(ws, branch)


def commit_all(
    ws: Workspace, cwd: Path, message: str, author: tuple[str, str] | None = None
) -> str | None:
    """Commit everything the checkout holds (the Safe Exit folder is excluded) and collect
    it. ``author``: whose work it is, when not tgflow's (tgflow is the committer either way).
    Usually there is nothing: one ``git status`` (shown in full: every untracked file, every
    submodule change) says so, where adding and asking the index would be two commands."""
    shown = ["--porcelain", "--untracked-files=normal", "--ignore-submodules=none"]
    if not ws.git(cwd, "status", *shown):
        return None
    ws.git(cwd, "add", "-A")
    if not ws.git(cwd, "diff", "--cached", "--name-only"):
        return None
    by = ["--author", f"{author[0]} <{author[1]}>"] if author else []
    ws.git(cwd, "commit", "--quiet", "--no-verify", *by, "-m", message)
    collect(ws, cwd)
    return ws.head(cwd)


def save_work(ws: Workspace, path: Path, message: str) -> list[str]:
    """Before a checkout goes: abort a half-done merge, commit what is left, and collect
    every commit into tgflow's clone, wherever the agent left HEAD."""
    notes = reclaim(path)
    if ws.in_merge(path):
        ws.git(path, "merge", "--abort", check=False)
        notes.append(f"aborted a half-done merge in {path}")
    notes += collect(ws, path).notes
    sha = commit_all(ws, path, message)
    if sha:
        notes.append(f"saved uncommitted work on {BRANCH_PREFIX}{path.name} as {sha[:10]}")
    return notes


def retire_worktree(ws: Workspace, path: Path) -> list[str]:
    """Remove a leftover checkout (of an interrupted run), first saving any work in it."""
    notes: list[str] = []
    message = (
        f"{WIP_PREFIX}: uncommitted work found in {path.name} after an interrupted run\n\n"
        f"{TASK_TRAILER}: {path.name}"
    )
    legacy = False
    if (git_dir_of(path) / "HEAD").is_file() and path.is_dir():
        notes = save_work(ws, path, message)
    elif (path / ".git").is_file():  # a git worktree an earlier tgflow made: commit in place
        legacy = True
        run_git(path, "add", "-A", check=False)
        if (
            run_git(path, "commit", "--quiet", "--no-verify", "-m", message, check=False).status
            == 0
        ):
            notes.append(f"saved uncommitted work in {path} on its branch")
    _remove(path)
    if legacy:  # its record in the clone goes with it
        ws.git(ws.integration, "worktree", "prune")
    notes.append(f"removed stale worktree {path}")
    return notes


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(git_dir_of(path), ignore_errors=True)
    shutil.rmtree(tmp_dir_of(path), ignore_errors=True)
    _clean_config(path).unlink(missing_ok=True)


def revert_paths(
    ws: Workspace,
    cwd: Path,
    pathspecs: Sequence[str],
    message: str,
    base_sha: str | None = None,
    head_ref: str | None = None,
) -> list[str]:
    """Undo, in one commit, the branch's changes (since it left base) to the files these git
    pathspecs match (a folder, a file); returns those files. ``base_sha``: base's commit, when
    the caller has read it. ``head_ref``: a ref of tgflow's clone at the checkout's HEAD (its
    task branch, just collected): the files are then picked from ``files_changed``, which the
    node reads anyway, when every pathspec is a plain path (no pattern, no magic)."""
    if base_sha is None:
        base_sha = ws.commit(ws.base_ref())  # the checkout borrows it
    plain = [_plain_path(spec) for spec in pathspecs]
    if head_ref is not None and all(plain):
        changed = [
            f
            for f in ws.files_changed(head_ref, base_sha)
            if any(f == p or f.startswith(f"{p}/") for p in plain)
        ]
    else:  # ``A...HEAD``: from their merge base, as ``git merge-base`` finds it.
        changed = ws.paths(
            cwd, "diff", "--no-renames", "--name-only", f"{base_sha}...HEAD", "--", *pathspecs
        )
    if not changed:
        return []
    mb = ws.git(cwd, "merge-base", base_sha, "HEAD")
    for rel in changed:
        if ws.succeeds(cwd, "cat-file", "-e", f"{mb}:{rel}"):
            ws.git(cwd, "checkout", mb, "--", rel)
        else:
            ws.git(cwd, "rm", "--quiet", "-f", "--", rel)
    ws.git(cwd, "commit", "--quiet", "--no-verify", "-m", message)
    collect(ws, cwd)
    return changed


def _plain_path(spec: str) -> str | None:
    """A pathspec that names a file or folder as it is (``.github/``, ``tasks``), as a path
    relative to the top, or None when git would read more into it (a pattern, ``:`` magic)."""
    path = spec.strip().removeprefix("./").rstrip("/")
    if not path or path.startswith(("/", ":")) or any(c in path for c in "*?[]\\") or ".." in path:
        return None
    return path


def push_branch(ws: Workspace, task_id: str) -> tuple[bool, str]:
    """Back the task branch up on the origin (the workspace is only a cache). A branch the
    agent rewrote (amend, rebase) replaces the origin's copy only when that copy's commits
    are kept elsewhere: in the new tip, or rescued."""
    branch, rescued = ws.branch(task_id), rescued_prefix(task_id)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    found = _refs(ws, local, remote, rescued)  # one command for what is asked below
    sha = found.get(local)
    force = (
        remote in found
        and (sha is None or not ws.is_ancestor(found[remote], sha))
        and _kept(ws, remote)
    )
    # First: a forced push below relies on them.
    refused = push_rescued(ws, task_id, [ref for ref in found if ref.startswith(rescued)])
    pushed = ws.push(f"{'+' if force else ''}{sha or local}:{local}")  # the commit read above
    if pushed.status == 0 and sha is not None:
        _mark_published(ws, branch, sha)
    return pushed.status == 0 and not refused, "; ".join([*refused, pushed.output])


def _kept(ws: Workspace, ref: str) -> bool:
    """Every commit of ``ref`` is on a rescue ref (or base): replacing ``ref`` loses none."""
    rescued = list(_refs(ws, RESCUED_REFS))
    return not ws.git(ws.integration, "rev-list", "-1", ref, "--not", ws.base_ref(), *rescued)


def delete_branch(ws: Workspace, task_id: str) -> bool:
    with ws.writing_config():  # git drops the branch's section of the config with it
        return ws.succeeds(ws.integration, "branch", "-D", ws.branch(task_id))


def remove_worktree(ws: Workspace, task_id: str) -> bool:
    """The checkout is done with (its work collected): parked for a later task to start from
    when it can be, its repository and temp dir deleted either way."""
    path = ws.worktree_path(task_id)
    if worth_reusing(ws):
        _park(path)
    _remove(path)
    return not path.exists()


def cleanup(
    ws: Workspace, task_id: str, push: bool = True, checkpointed: bool | None = None
) -> dict[str, bool]:
    """After a merge: the checkout goes (parked, see ``remove_worktree``), so do the local
    branch and (when pushing: the merge is then on the origin too) the remote branch and,
    with ``checkpointed`` (whether this attempt pushed a checkpoint), the task's checkpoint
    (``drop_checkpoint``); the three refs are read through the clone's reader."""
    branch = ws.branch(task_id)
    local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
    fetched = f"{FETCHED_CHECKPOINTS}{slug(task_id)}"
    found = ws.commits_of(local, remote, fetched)
    result = {"worktree": remove_worktree(ws, task_id)}
    if local in found:
        result["branch"] = delete_branch(ws, task_id)
    if push and remote in found:
        result["remote_branch"] = ws.push(f":refs/heads/{branch}").status == 0
    if (
        push
        and checkpointed is not None
        and not drop_checkpoint(ws, task_id, checkpointed, fetched in found)
    ):
        result["checkpoint"] = False
    return result
