"""The git side of a run: a clone tgflow owns, its worktrees, merges, pushes and cleanup.

All git work happens here, never in the user's checkout. Layout under ``root``:
``integration/`` is the clone itself, checked out on the base branch (merges happen there,
it never holds user work); ``worktrees/<slug>`` are the task worktrees on ``tgflow/<slug>``.

Methods do not lock. Callers hold ``merge_lock`` around anything that moves shared refs
(creating or removing worktrees and branches, merging, pushing); an agent session in its own
worktree needs no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import git

from tasks_lib.graph.dag import branch_slug
from tasks_lib.graph.taskfile import LoadResult, Task, load_tasks

DEFAULT_IDENTITY = ("tgflow", "tgflow@localhost")
BRANCH_PREFIX = "tgflow/"
UNPUSHED_PREFIX = "tgflow-unpushed/"
SAFE_EXIT_DIR = ".tgflow"
WIP_PREFIX = "tgflow: wip"  # a branch whose tip says this must be developed further
LS_REMOTE_TIMEOUT_S = 60.0

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def merge_lock_for(origin: str) -> threading.Lock:
    """One lock per origin for the whole process (importable, so a served flow can share it)."""
    key = normalise_origin(origin)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


class WorkspaceError(Exception):
    """A problem with the origin or the workspace, phrased for the person running tgflow."""


class GitError(WorkspaceError):
    def __init__(self, args: list[str], cwd: Path, status: int, output: str) -> None:
        self.status = status
        self.output = output
        super().__init__(f"git {' '.join(args)} failed in {cwd} (exit {status}): {output.strip()}")


def normalise_origin(origin: str) -> str:
    """Local paths become absolute (so the same origin is always one key); URLs stay as given."""
    if "://" in origin or re.match(r"^[\w.-]+@[\w.-]+:", origin):
        return origin
    return str(Path(origin).expanduser().resolve())


def _local_origin_path(origin: str) -> Path | None:
    if origin.startswith("file://"):
        return Path(origin[len("file://") :])
    if "://" in origin or re.match(r"^[\w.-]+@[\w.-]+:", origin):
        return None
    return Path(origin)


def slug(task_id: str) -> str:
    """``graph.branch_slug``, with a hash when the id has nothing usable (e.g. only symbols)."""
    return branch_slug(task_id) or "task-" + hashlib.sha1(task_id.encode("utf-8")).hexdigest()[:8]


def default_root(origin: str, cache: Path | None = None) -> Path:
    """``<cache>/workspaces/<origin's tail>-<hash>``: one workspace per origin."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", normalise_origin(origin)).strip("-.")[-60:]
    digest = hashlib.sha1(normalise_origin(origin).encode("utf-8")).hexdigest()[:8]
    cache = Path(cache or "~/.cache/tgflow").expanduser()
    return cache / "workspaces" / f"{name}-{digest}"


@dataclass
class MergeResult:
    merged: bool
    pre_sha: str
    sha: str | None = None
    conflicts: list[str] = field(default_factory=list)


@dataclass
class PushResult:
    pushed: bool
    attempts: int
    reason: str = ""


@dataclass
class TaskCheckout:
    path: Path
    branch: str
    resumed: bool  # the branch already held commits that are not on base
    needs_agent: bool  # False only when resuming finished work (tip is not a WIP commit)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport:
    removed_worktrees: list[str] = field(default_factory=list)
    saved_work: list[str] = field(default_factory=list)  # branches that got a WIP commit
    resumable: dict[str, int] = field(default_factory=dict)  # branch → commits not on base
    deleted_branches: list[str] = field(default_factory=list)
    kept_unpushed: str | None = None  # branch holding merges an earlier --no-push run left


@dataclass
class Workspace:
    """A clone of one origin under ``root``; plain data, so it pickles for Prefect."""

    origin: str
    root: Path
    base: str = "main"
    identity: tuple[str, str] = DEFAULT_IDENTITY

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        origin: str,
        root: Path | None = None,
        base: str = "main",
        identity: tuple[str, str] | None = None,
        *,
        push: bool = True,
    ) -> Workspace:
        """Clone (or reuse and fetch) ``origin``; refuse up front what would fail later."""
        origin = normalise_origin(origin)
        root = Path(root).expanduser().resolve() if root else default_root(origin)
        heads = _remote_heads(origin)
        if base not in heads:
            known = ", ".join(sorted(heads)) or "none"
            raise WorkspaceError(
                f"origin {origin} has no branch '{base}' (branches: {known}). "
                f"Pass the right base branch, or push '{base}' to the origin first."
            )
        if push:
            _refuse_checked_out_origin(origin, base)
        ws = cls(origin=origin, root=root, base=base)
        integration = ws.integration
        if (integration / ".git").exists():
            url = ws.git(integration, "config", "--get", "remote.origin.url", check=False)
            if normalise_origin(url) != origin:
                raise WorkspaceError(
                    f"workspace {root} is a clone of {url!r}, not of {origin}. "
                    "Choose another workspace root or delete that directory."
                )
        elif integration.exists() and any(integration.iterdir()):
            raise WorkspaceError(
                f"{integration} exists and is not a tgflow clone; remove it or pick another root."
            )
        else:
            root.mkdir(parents=True, exist_ok=True)
            ws.git(
                root, "clone", "--quiet", "--origin", "origin", "-b", base, origin, str(integration)
            )
        ws.identity = identity or ws._user_identity() or DEFAULT_IDENTITY
        ws.git(integration, "config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
        # No automatic gc while parallel sessions commit (it repacks refs under them);
        # reconcile runs it at the start of a run instead.
        ws.git(integration, "config", "gc.auto", "0")
        ws._exclude_safe_exit_dir()
        ws.fetch()
        return ws

    def _user_identity(self) -> tuple[str, str] | None:
        """The user's own git identity (global/system config), when both parts are set."""
        repo = git.Git(str(self.integration))
        found = [
            repo.execute(["git", "config", "--get", key], with_exceptions=False).strip()
            for key in ("user.name", "user.email")
        ]
        return (found[0], found[1]) if all(found) else None

    def _exclude_safe_exit_dir(self) -> None:
        exclude = Path(self.git(self.integration, "rev-parse", "--git-common-dir"))
        if not exclude.is_absolute():
            exclude = self.integration / exclude
        exclude = exclude / "info" / "exclude"
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if f"/{SAFE_EXIT_DIR}/" not in text.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            sep = "" if not text or text.endswith("\n") else "\n"
            exclude.write_text(f"{text}{sep}/{SAFE_EXIT_DIR}/\n", encoding="utf-8")

    # --- paths and plain git -------------------------------------------------------------

    @property
    def integration(self) -> Path:
        return self.root / "integration"

    @property
    def worktrees_dir(self) -> Path:
        return self.root / "worktrees"

    @property
    def merge_lock(self) -> threading.Lock:
        return merge_lock_for(self.origin)

    @contextmanager
    def run_lock(self, on_wait: Callable[[str], None] = lambda holder: None) -> Iterator[None]:
        """One run at a time in this clone, across processes (a CLI run beside a deployment
        run): a second run's reconcile would retire the first one's worktrees under its
        agents. A second run waits, told who holds the clone; the kernel frees the lock of
        a run that dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "run.lock").open("a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                on_wait(f.read().strip() or "another tgflow run")
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(f"tgflow run in pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    def branch(self, task_id: str) -> str:
        return BRANCH_PREFIX + slug(task_id)

    def worktree_path(self, task_id: str) -> Path:
        return self.worktrees_dir / slug(task_id)

    def identity_env(self) -> dict[str, str]:
        """For agent sessions: their commits need an identity on a machine without config."""
        name, email = self.identity
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def git(self, cwd: Path, *args: str, check: bool = True) -> str:
        """Run git with our identity (per command, never written to any config)."""
        name, email = self.identity
        argv = ["git", "-c", f"user.name={name}", "-c", f"user.email={email}", *args]
        status, out, err = git.Git(str(cwd)).execute(
            argv,
            with_extended_output=True,
            with_exceptions=False,
            env={"GIT_TERMINAL_PROMPT": "0"},
        )
        if check and status != 0:
            raise GitError(list(args), cwd, status, "\n".join(s for s in (err, out) if s))
        return out.strip()

    def _ok(self, cwd: Path, *args: str) -> bool:
        try:
            self.git(cwd, *args)
        except GitError:
            return False
        return True

    def ref_exists(self, ref: str) -> bool:
        return self._ok(self.integration, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}")

    def head(self, cwd: Path | None = None) -> str:
        return self.git(cwd or self.integration, "rev-parse", "HEAD")

    def base_ref(self) -> str:
        return f"refs/heads/{self.base}"

    def commits_ahead(self, ref: str) -> list[str]:
        """Commits of ``ref`` not on base, oldest first."""
        out = self.git(self.integration, "rev-list", "--reverse", ref, f"^{self.base_ref()}")
        return out.split()

    def files_changed(self, ref: str) -> list[str]:
        """Files ``ref`` changes relative to where it meets base."""
        mb = self.git(self.integration, "merge-base", self.base_ref(), ref)
        return [
            p for p in self.git(self.integration, "diff", "--name-only", mb, ref).split("\n") if p
        ]

    # --- the integration worktree ---------------------------------------------------------

    def fetch(self) -> None:
        self.git(self.integration, "fetch", "--quiet", "--prune", "origin")

    def sync(self) -> str:
        """Fetch and put the integration worktree exactly on origin/base. Returns its sha."""
        self.fetch()
        return self.reset_to(f"refs/remotes/origin/{self.base}")

    def refresh(self, push: bool) -> str:
        """A clean integration worktree before reading or merging: on origin's base when
        pushing, else on our local base (which holds the unpushed merges)."""
        return self.sync() if push else self.reset_to(self.base_ref())

    def reset_to(self, ref: str) -> str:
        """Drop whatever the integration worktree holds (it is ours) and stand on ``ref``."""
        self.git(self.integration, "reset", "--quiet", "--hard", ref)
        self.git(self.integration, "clean", "-fdq")
        return self.head()

    def merge(self, task_id: str, message: str) -> MergeResult:
        """``merge --no-ff`` the task branch into base; a conflict is aborted, never left."""
        pre = self.head()
        try:
            self.git(
                self.integration,
                "merge",
                "--no-ff",
                "--no-edit",
                "-m",
                message,
                self.branch(task_id),
            )
        except GitError:
            conflicts = self.git(self.integration, "diff", "--name-only", "--diff-filter=U")
            if self.ref_exists("MERGE_HEAD"):
                self.git(self.integration, "merge", "--abort")
            self.reset_to(pre)
            if not conflicts:
                raise
            return MergeResult(merged=False, pre_sha=pre, conflicts=conflicts.split("\n"))
        return MergeResult(merged=True, pre_sha=pre, sha=self.head())

    def commit_paths(self, paths: list[Path], message: str) -> str:
        """Commit these files of the integration worktree on base (status updates)."""
        rel = [str(p.relative_to(self.integration)) if p.is_absolute() else str(p) for p in paths]
        self.git(self.integration, "add", "--", *rel)
        self.git(self.integration, "commit", "--quiet", "-m", message, "--", *rel)
        return self.head()

    def push_base(self, redo: Callable[[], str | None], retries: int) -> PushResult:
        """Push base. A rejected push (origin moved) means: fetch, stand on origin/base,
        ``redo()`` our work there (re-merge, re-validate, re-commit; it returns a failure
        reason or None), push again. Bounded; never forced."""
        for attempt in range(1, retries + 2):
            status, out = self._push(f"{self.base_ref()}:{self.base_ref()}")
            if status == 0:
                return PushResult(pushed=True, attempts=attempt)
            if not _rejected(out):
                return PushResult(False, attempt, f"push of {self.base} failed: {out.strip()}")
            if attempt > retries:
                break
            self.sync()
            reason = redo()
            if reason is not None:
                return PushResult(False, attempt, reason)
        return PushResult(
            False,
            retries + 1,
            f"push of {self.base} rejected {retries + 1} times (the origin keeps moving)",
        )

    def _push(self, refspec: str, *extra: str) -> tuple[int, str]:
        status, out, err = git.Git(str(self.integration)).execute(
            ["git", "push", "--porcelain", *extra, "origin", refspec],
            with_extended_output=True,
            with_exceptions=False,
            env={"GIT_TERMINAL_PROMPT": "0"},
        )
        return status, f"{out}\n{err}"

    # --- task worktrees ------------------------------------------------------------------

    def start_task(self, task_id: str) -> TaskCheckout:
        """A worktree for the task: on its existing branch when that holds work (resume),
        else on a new branch from the current base."""
        branch, path = self.branch(task_id), self.worktree_path(task_id)
        notes: list[str] = []
        if path.exists() or self._registered(path):
            notes += self._retire_worktree(path)
        local, remote = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
        has_local, has_remote = self.ref_exists(local), self.ref_exists(remote)
        if has_remote and self.commits_ahead(remote):
            if not has_local:
                self.git(self.integration, "branch", "--quiet", "--no-track", branch, remote)
                has_local = True
            elif self.is_ancestor(local, remote):
                self.git(self.integration, "branch", "--quiet", "-f", branch, remote)
            elif not self.is_ancestor(remote, local):
                notes.append(
                    f"{branch} and origin/{branch} diverged; continuing from the local one"
                )
        if has_local and self.commits_ahead(local):
            self.git(self.integration, "worktree", "add", "--quiet", str(path), branch)
            tip = self.git(path, "log", "-1", "--format=%s")
            resumed = len(self.commits_ahead(local))
            notes.append(
                f"resumed {branch}: it already held {resumed} commit(s) not on {self.base}"
            )
            return TaskCheckout(path, branch, True, tip.startswith(WIP_PREFIX), notes)
        self.git(
            self.integration, "worktree", "add", "--quiet", "-B", branch, str(path), self.base_ref()
        )
        return TaskCheckout(path, branch, False, True, notes)

    def is_ancestor(self, a: str, b: str) -> bool:
        return self._ok(self.integration, "merge-base", "--is-ancestor", a, b)

    def _registered(self, path: Path) -> bool:
        listing = self.git(self.integration, "worktree", "list", "--porcelain")
        return f"worktree {path}" in listing.splitlines()

    def commit_all(self, cwd: Path, message: str) -> str | None:
        """Commit everything the worktree holds (the Safe Exit folder is in info/exclude)."""
        self.git(cwd, "add", "-A")
        if not self.git(cwd, "diff", "--cached", "--name-only"):
            return None
        self.git(cwd, "commit", "--quiet", "--no-verify", "-m", message)
        return self.head(cwd)

    def in_merge(self, cwd: Path) -> bool:
        return self._ok(cwd, "rev-parse", "-q", "--verify", "MERGE_HEAD")

    def save_work(self, path: Path, message: str) -> list[str]:
        """Before a worktree goes: abort a half-done merge, commit what is left, and keep the
        commits on a branch even when the agent left HEAD detached."""
        notes: list[str] = []
        if self.in_merge(path):
            self.git(path, "merge", "--abort", check=False)
            notes.append(f"aborted a half-done merge in {path}")
        sha = self.commit_all(path, message)
        branch = self.git(path, "symbolic-ref", "-q", "--short", "HEAD", check=False)
        if sha:
            notes.append(f"saved uncommitted work on {branch or 'a detached HEAD'} as {sha[:10]}")
        if not branch:
            head = self.head(path)
            if self.commits_ahead(head):
                rescue = f"{BRANCH_PREFIX}rescued-{path.name}-{head[:8]}"
                self.git(self.integration, "branch", "-f", rescue, head)
                notes.append(f"HEAD of {path} was detached; its commits are kept on {rescue}")
        return notes

    def _retire_worktree(self, path: Path) -> list[str]:
        """Remove a leftover worktree, first saving any work in it."""
        notes: list[str] = []
        if (path / ".git").exists():
            notes = self.save_work(
                path,
                f"{WIP_PREFIX}: uncommitted work found in {path.name} after an interrupted run",
            )
        self.git(self.integration, "worktree", "remove", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path)
        self.git(self.integration, "worktree", "prune")
        notes.append(f"removed stale worktree {path}")
        return notes

    def revert_paths(self, cwd: Path, folder: str, message: str) -> list[str]:
        """Undo, in one commit, the branch's changes to files under ``folder``."""
        mb = self.git(cwd, "merge-base", self.base_ref(), "HEAD")
        changed = [
            p
            for p in self.git(cwd, "diff", "--name-only", mb, "HEAD", "--", folder).split("\n")
            if p
        ]
        if not changed:
            return []
        for rel in changed:
            if self._ok(cwd, "cat-file", "-e", f"{mb}:{rel}"):
                self.git(cwd, "checkout", mb, "--", rel)
            else:
                self.git(cwd, "rm", "--quiet", "-f", "--", rel)
        self.git(cwd, "commit", "--quiet", "--no-verify", "-m", message)
        return changed

    def push_branch(self, task_id: str) -> tuple[bool, str]:
        """Back the task branch up on the origin (the workspace is only a cache)."""
        branch = self.branch(task_id)
        status, out = self._push(f"refs/heads/{branch}:refs/heads/{branch}")
        return status == 0, out.strip()

    def delete_branch(self, task_id: str) -> bool:
        return self._ok(self.integration, "branch", "-D", self.branch(task_id))

    def remove_worktree(self, task_id: str) -> bool:
        path = self.worktree_path(task_id)
        self.git(self.integration, "worktree", "remove", "--force", str(path), check=False)
        self.git(self.integration, "worktree", "prune")
        return not path.exists()

    def cleanup(self, task_id: str, push: bool = True) -> dict[str, bool]:
        """After a merge: remove the worktree, the local branch and (when pushing: the merge
        is then on the origin too) the remote branch."""
        branch = self.branch(task_id)
        result = {"worktree": self.remove_worktree(task_id)}
        if self.ref_exists(f"refs/heads/{branch}"):
            result["branch"] = self.delete_branch(task_id)
        if push and self.ref_exists(f"refs/remotes/origin/{branch}"):
            status, _ = self._push(f":refs/heads/{branch}")
            result["remote_branch"] = status == 0
        return result

    # --- run start -----------------------------------------------------------------------

    def reconcile(self, push: bool = True) -> ReconcileReport:
        """Start of a run: no stale worktrees, task branches sorted into resumable (work
        not on base: never deleted) and merged (deleted).

        A pushing run stands on origin's base; merges an earlier ``--no-push`` run left on
        our local base are kept on a ``tgflow-unpushed/…`` branch first, never dropped. A
        run without push goes on from the local base, so it sees its own earlier merges,
        and never touches the origin's branches.
        """
        report = ReconcileReport()
        self.fetch()
        if push:
            unpushed = self.git(
                self.integration, "rev-list", self.base_ref(), f"^refs/remotes/origin/{self.base}"
            ).split()
            if unpushed:
                stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
                report.kept_unpushed = f"{UNPUSHED_PREFIX}{stamp}-{unpushed[0][:8]}"
                self.git(self.integration, "branch", report.kept_unpushed, self.base_ref())
            self.sync()
        else:
            self.reset_to(self.base_ref())
        self.git(self.integration, "-c", "gc.auto=6700", "gc", "--auto", "--quiet")
        if self.worktrees_dir.is_dir():
            for path in sorted(self.worktrees_dir.iterdir()):
                notes = self._retire_worktree(path)
                report.removed_worktrees.append(path.name)
                report.saved_work += [n for n in notes if not n.startswith("removed")]
        self.git(self.integration, "worktree", "prune")
        local = self._refs(f"refs/heads/{BRANCH_PREFIX}")
        remote = self._refs(f"refs/remotes/origin/{BRANCH_PREFIX}")
        for name in sorted(set(local) | set(remote)):
            ahead = max(
                (len(self.commits_ahead(r)) for r in (local.get(name), remote.get(name)) if r),
                default=0,
            )
            if ahead:
                report.resumable[name] = ahead
                continue
            if name in local:
                self.git(self.integration, "branch", "-D", name)
            if name in remote and push:
                self._push(f":refs/heads/{name}")
            if name in local or push:
                report.deleted_branches.append(name)
        return report

    def _refs(self, prefix: str) -> dict[str, str]:
        out = self.git(self.integration, "for-each-ref", "--format=%(refname)", prefix)
        short = prefix.rsplit(BRANCH_PREFIX, 1)[0]
        return {r[len(short) :]: r for r in out.split("\n") if r}

    # --- task files on base --------------------------------------------------------------

    def load_tasks(self, tasks_dir: str = "tasks") -> LoadResult:
        """The task files as they are on base (statuses live there)."""
        return load_tasks(self.integration / tasks_dir)

    def find_task(self, task_id: str, tasks_dir: str = "tasks") -> Task | None:
        return next((t for t in self.load_tasks(tasks_dir).tasks if t.id == task_id), None)


def _rejected(push_output: str) -> bool:
    return any(w in push_output for w in ("[rejected]", "non-fast-forward", "fetch first"))


def _remote_heads(origin: str) -> set[str]:
    try:
        done = subprocess.run(
            ["git", "ls-remote", "--heads", origin],
            capture_output=True,
            text=True,
            timeout=LS_REMOTE_TIMEOUT_S,
            env={
                **os.environ,
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            },
        )
    except subprocess.TimeoutExpired:
        raise WorkspaceError(
            f"origin {origin} did not answer within {LS_REMOTE_TIMEOUT_S:g}s; "
            "check the URL and your network."
        ) from None
    if done.returncode != 0:
        lines = [x.strip() for x in (done.stderr or done.stdout).splitlines() if x.strip()]
        fatal = [x.removeprefix("fatal: ") for x in lines if x.startswith("fatal: ")]
        detail = (fatal or lines or ["git ls-remote failed"])[0].rstrip(".")
        raise WorkspaceError(
            f"cannot reach origin {origin}: {detail}. "
            "Check the URL or path, and that your credentials work with `git ls-remote`."
        )
    return {
        line.split("\trefs/heads/", 1)[1]
        for line in done.stdout.splitlines()
        if "\trefs/heads/" in line
    }


def _refuse_checked_out_origin(origin: str, base: str) -> None:
    """git refuses pushes to the checked-out branch of a non-bare repo: say so before work."""
    path = _local_origin_path(origin)
    if path is None:
        return
    repo = git.Git(str(path))
    _, bare, _ = repo.execute(
        ["git", "rev-parse", "--is-bare-repository"],
        with_extended_output=True,
        with_exceptions=False,
    )
    if bare.strip() == "true":
        return
    _, head, _ = repo.execute(
        ["git", "symbolic-ref", "-q", "HEAD"], with_extended_output=True, with_exceptions=False
    )
    _, deny, _ = repo.execute(
        ["git", "config", "--get", "receive.denyCurrentBranch"],
        with_extended_output=True,
        with_exceptions=False,
    )
    if head.strip() == f"refs/heads/{base}" and deny.strip() in ("", "refuse", "true"):
        raise WorkspaceError(
            f"origin {origin} is a working checkout with '{base}' checked out, so git would "
            f"refuse tgflow's pushes to '{base}'. Use the URL of its remote instead "
            f"(`git -C {origin} remote get-url origin`), or make a bare mirror and run on it: "
            f"`git clone --mirror {origin} {origin.rstrip('/')}.git`. tgflow never forces a push."
        )
