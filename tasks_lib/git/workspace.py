"""The clone tgflow owns of one origin, and what can be asked of it.

Layout under ``root``: ``integration/`` is the clone itself, checked out on the base branch
(merges happen there, it never holds user work); ``worktrees/<slug>`` are the task checkouts
on ``tgflow/<slug>``, each a clone of the clone with its git dir under ``clones/`` (see
``worktrees``). Agents work in those checkouts and cannot change the clone's config, refs or
remotes through them; tgflow still fetches from and pushes to the origin it opened by URL,
never by the ``origin`` remote, and checks a checkout's link to its git dir before running
git in it. ``spare/<n>`` holds the files of checkouts done with, for the next task to reuse
(``worktrees``). Nothing here locks: callers hold ``merge_lock`` around anything that moves
base or touches the integration worktree, and ``config_lock`` around config writes (see
``locks``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks_lib.git import BRANCH_PREFIX, WorkspaceError, history
from tasks_lib.git.links import ensure_linked
from tasks_lib.git.locks import FairLock, config_lock_for, merge_lock_for
from tasks_lib.git.origin import (
    default_root,
    normalise_origin,
    refuse_checked_out_origin,
    remote_heads,
)
from tasks_lib.git.runner import GitError, GitResult, reader, run_git, writer
from tasks_lib.graph.dag import branch_slug
from tasks_lib.graph.taskfile import LoadResult, Task, load_tasks

DEFAULT_IDENTITY = ("tgflow", "tgflow@localhost")
AGENT_EMAIL = "agent@tgflow.invalid"
TASK_TRAILER = "Tgflow-Task"  # on every commit of a task: which task it was made for
SAFE_EXIT_DIR = ".tgflow"
SETTLED_REF = "refs/tgflow/settled"  # base as of the last finished change (see ``settled``)

log = logging.getLogger(__name__)
# What tgflow pushed to base since the workspace was opened, oldest first, per clone: module
# state (like the merge locks) so every copy of a pickled Workspace in the process shares it.
_PUSHED_TO_BASE: dict[Path, list[str]] = {}
# The integration config's (inode, mtime, size) when its origin was last found right.
_CONFIG_CHECKED: dict[Path, tuple[int, int, int]] = {}
# Per clone: the commit its integration worktree was last left clean on by tgflow, with its
# index's (inode, mtime, size) then (``mark_clean``; ``stand_on`` trusts it).
_CLEAN_AT: dict[Path, tuple[str, tuple[int, int, int] | None]] = {}


FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a commit id, SHA-1 or SHA-256


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """A file's (inode, mtime, size): it changed when this did (git rewrites by rename)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _show(integration: Path, rev: str, rel: str) -> str | None:
    found = reader(integration).contents(f"{rev}:{rel}")
    if found is None or found[0] != "blob":
        return None
    return found[1].decode("utf-8", "replace").strip()


@functools.lru_cache(maxsize=256)
def _show_at_commit(integration: Path, sha: str, rel: str) -> str | None:
    return _show(integration, sha, rel)


@functools.lru_cache(maxsize=256)
def _files_changed(integration: Path, base: str, sha: str) -> tuple[str, ...]:
    line = history.line_on(integration, base, sha)
    if line is not None:  # base is where they meet: the two trees, read
        found = reader(integration).info(f"{base}^{{tree}}")
        if not line or found is None:
            return ()
        return tuple(history.files_between(integration, found[0], line[-1].tree))
    return tuple(
        run_git(integration, "diff", "-z", "--no-renames", "--name-only", f"{base}...{sha}").paths
    )


# (clone, a, b) -> whether commit a is an ancestor of commit b: a fact of the two commits,
# never changed by what happens to refs (a node asks some twice: collecting, then merging).
_ANCESTRY: dict[tuple[Path, str, str], bool] = {}
_ANCESTRY_MAX = 4096


def parse_identity(text: str) -> tuple[str, str] | None:
    """``"Name <email>"`` as (name, email); None when it is not that shape."""
    match = re.fullmatch(r"\s*([^<>]*?)\s*<([^<>\s]+)>\s*", text)
    return (match[1], match[2]) if match and match[1] else None


def slug(task_id: str) -> str:
    """``graph.branch_slug``, with a hash when the id has nothing usable (e.g. only symbols)."""
    return branch_slug(task_id) or "task-" + hashlib.sha1(task_id.encode("utf-8")).hexdigest()[:8]


_TRAILER_LIKE = re.compile(r"^[A-Za-z0-9-]+\s*:|^\(cherry picked from commit ")


def with_trailer(message: str, trailer: str) -> str | None:
    """``message`` with ``trailer`` added as ``git interpret-trailers`` adds it, where that is
    plain to see: some text (git trims an empty one its own way), no line git treats apart (a
    comment, a ``---`` patch divider, a CR) and no trailer block (no line of the last paragraph
    past the title looks like ``token:``), so the trailer goes after a blank line at the end.
    None otherwise: git's own rules then decide (a block ``interpret-trailers`` takes as
    trailers only in part, for one). The usual agent commit spares a command this way."""
    lines = message.rstrip("\n").split("\n")
    if (
        not message.strip()
        or "\r" in message
        or any(line.startswith(("#", "---")) for line in lines)
    ):
        return None
    blank = [n for n, line in enumerate(lines) if not line.strip()]
    if blank and any(_TRAILER_LIKE.match(line) for line in lines[blank[-1] + 1 :]):
        return None
    return "\n".join(lines) + f"\n\n{trailer}\n"


@dataclass
class Workspace:
    """A clone of one origin under ``root``; plain data, so it pickles for Prefect."""

    origin: str
    root: Path
    base: str = "main"
    identity: tuple[str, str] = DEFAULT_IDENTITY

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
        heads = remote_heads(origin)
        if base not in heads:
            known = ", ".join(sorted(heads)) or "none"
            raise WorkspaceError(
                f"origin {origin} has no branch '{base}' (branches: {known}). "
                f"Pass the right base branch, or push '{base}' to the origin first."
            )
        if push:
            refuse_checked_out_origin(origin, base)
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
        ws._settle_at_start(push)
        _PUSHED_TO_BASE[ws.root] = []  # a new run
        return ws

    def _user_identity(self) -> tuple[str, str] | None:
        """The user's own git identity (global/system config), when both parts are set."""
        name, email = (
            run_git(self.integration, "config", "--get", key, check=False).out
            for key in ("user.name", "user.email")
        )
        return (name, email) if name and email else None

    def _exclude_safe_exit_dir(self) -> None:
        """Agents leave Safe Exit notes in ``.tgflow/``: never committed, in any worktree."""
        exclude = Path(self.git(self.integration, "rev-parse", "--git-common-dir"))
        if not exclude.is_absolute():
            exclude = self.integration / exclude
        exclude = exclude / "info" / "exclude"
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if f"/{SAFE_EXIT_DIR}/" not in text.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            sep = "" if not text or text.endswith("\n") else "\n"
            exclude.write_text(f"{text}{sep}/{SAFE_EXIT_DIR}/\n", encoding="utf-8")

    # --- paths -------------------------------------------------------------------------

    @property
    def integration(self) -> Path:
        return self.root / "integration"

    @property
    def worktrees_dir(self) -> Path:
        return self.root / "worktrees"

    @property
    def merge_lock(self) -> FairLock:
        return merge_lock_for(self.origin)

    @property
    def config_lock(self) -> threading.Lock:
        """Held around every write to the clone's config (``locks.config_lock_for``)."""
        return config_lock_for(self.origin)

    @contextlib.contextmanager
    def writing_config(self) -> Iterator[None]:
        """Around tgflow's own writes to the clone's config (under ``config_lock``): a config
        whose origin was found right before them is still right after, so the next push
        does not ask git again (``_restore_origin_url``)."""
        config = self.integration / ".git" / "config"
        with self.config_lock:
            right = _CONFIG_CHECKED.get(self.root) == _stamp(config)
            yield
            stamp = _stamp(config)
            if right and stamp is not None:
                _CONFIG_CHECKED[self.root] = stamp

    def branch(self, task_id: str) -> str:
        return BRANCH_PREFIX + slug(task_id)

    def worktree_path(self, task_id: str) -> Path:
        return self.worktrees_dir / slug(task_id)

    def identity_env(self, author: tuple[str, str] | None = None) -> dict[str, str]:
        """For agent sessions: their commits need an identity on a machine without config,
        and say who wrote them (``author``, the agent) apart from who commits (tgflow)."""
        name, email = self.identity
        author_name, author_email = author or self.identity
        return {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def add_task_trailer(self, cwd: Path, since: str, task_id: str) -> int:
        """Give the commits made on ``cwd``'s HEAD after ``since`` a ``Tgflow-Task`` trailer
        where they lack it; returns how many commits were rewritten.

        Only commits that are nowhere else yet are rewritten (not on base, on ``since`` or on
        any remote-tracking ref), so nothing shared changes. Merges the agent made are marked
        too (their parents on base stay as they are). Author, dates and tree are kept; the
        committer is tgflow, as for every commit of the session.

        However many commits there are, one ``git log`` lists them (oldest first) with all
        they need; a plain message gets the trailer in process (``with_trailer``), the rest
        in one ``interpret-trailers``; then one ``commit-tree`` per commit rewritten. (One
        ``commit --amend`` for the usual single commit was measured no cheaper than the
        three: it reads and writes the index.)"""
        base_sha = self.commit(self.base_ref())  # cwd borrows it
        # Commit, tree, parents, author, dates, trailer values, message.
        fields = "%x00".join(
            ("%H", "%T", "%P", "%an", "%ae", "%ad", "%cd",
             f"%(trailers:key={TASK_TRAILER},valueonly)")
        )  # fmt: skip
        shown = self.git(
            cwd, "log", "--reverse", "--topo-order", "--date=raw", f"--format={fields}%x00%B%x01",
            "HEAD", "--not", since, base_sha, "--remotes",
        )  # fmt: skip
        # Each ends in \x01: the last piece is what follows the last commit (nothing).
        commits = [info.lstrip("\n").split("\x00", 8) for info in shown.split("\x01")[:-1]]
        trailer = f"{TASK_TRAILER}: {task_id}"
        rewritten: dict[str, str] = {}
        if not commits:
            return 0
        # The one tip comes first in topological order, so last here; ``update-ref`` below
        # moves HEAD only from it.
        head = commits[-1][0]
        values = [[v.strip() for v in info[7].split("\n")] for info in commits]
        lacking_at = [n for n, found in enumerate(values) if task_id not in found]
        if not lacking_at:
            return 0
        messages = [info[8].strip() + "\n" for info in commits]
        for n in lacking_at:
            messages[n] = with_trailer(messages[n], trailer) or ""
        if unplain := [n for n in lacking_at if not messages[n]]:  # git's own rules decide
            with tempfile.TemporaryDirectory(prefix="tgflow-trailer-") as tmp:
                files = [Path(tmp) / f"message-{n}" for n in unplain]
                for message_file, n in zip(files, unplain, strict=True):
                    message_file.write_text(commits[n][8].strip() + "\n", encoding="utf-8")
                names = [str(f) for f in files]
                self.git(cwd, "interpret-trailers", "--in-place", "--trailer", trailer, *names)
                for message_file, n in zip(files, unplain, strict=True):
                    messages[n] = message_file.read_bytes().decode("utf-8")  # CRs kept
        for n, info in enumerate(commits):
            sha, tree, parents, name, email, authored, committed = info[:7]
            new_parents = [rewritten.get(p, p) for p in parents.split()]
            if n not in lacking_at and new_parents == parents.split():
                continue
            env = {
                **self.identity_env((name, email)),
                "GIT_AUTHOR_DATE": authored,
                "GIT_COMMITTER_DATE": committed,
            }
            rewritten[sha] = run_git(
                cwd, "commit-tree", tree, *(a for p in new_parents for a in ("-p", p)),
                env=env, input=messages[n],
            ).out  # fmt: skip
        if rewritten.get(head, head) != head:
            self.git(
                cwd, "update-ref", "-m", "tgflow: add task trailers", "HEAD", rewritten[head], head
            )
        return len(rewritten)

    # --- running git ---------------------------------------------------------------------

    def git(self, cwd: Path, *args: str, check: bool = True, input: str | None = None) -> str:
        """Git with our identity (our commits need one on a machine without config)."""
        ensure_linked(self.integration, self.worktrees_dir, cwd)
        return run_git(cwd, *args, identity=self.identity, check=check, input=input).out

    def paths(self, cwd: Path, command: str, *args: str) -> list[str]:
        """The file names git ``command`` lists (run with ``-z``), each exactly as it is."""
        ensure_linked(self.integration, self.worktrees_dir, cwd)
        return run_git(cwd, command, "-z", *args, identity=self.identity).paths

    def succeeds(self, cwd: Path, *args: str) -> bool:
        """For the git commands that answer a question with their exit status."""
        ensure_linked(self.integration, self.worktrees_dir, cwd)
        return run_git(cwd, *args, identity=self.identity, check=False).status == 0

    def push(
        self,
        *refspecs: str,
        with_refs: Mapping[str, str | None] | None = None,
        lease: Mapping[str, str] | None = None,
    ) -> GitResult:
        """``git push`` of these refspecs (``[+]src:dst`` or ``:dst``) to the origin, in one
        ``--atomic`` push when there are several (all land or none); the caller reads the
        verdict. Pushed to the URL, so the tracking refs are updated here, in one transaction
        with ``with_refs`` (ref -> commit, or None to delete it: what the caller would set
        next, on success).
        ``lease`` (ref -> commit): refused unless the origin's ref is still that commit."""
        self._restore_origin_url()
        atomic = ["--atomic"] if len(refspecs) > 1 else []
        leases = [f"--force-with-lease={ref}:{sha}" for ref, sha in (lease or {}).items()]
        pushed = run_git(
            self.integration, "push", "--porcelain", *atomic, *leases, self.origin, *refspecs,
            check=False,
        )  # fmt: skip
        tracking: dict[str, str | None] = {}
        for refspec in refspecs:
            src, _, dst = refspec.removeprefix("+").rpartition(":")
            if dst.startswith("refs/heads/"):
                name = "refs/remotes/origin/" + dst.removeprefix("refs/heads/")
                tracking[name] = f"{src}^{{commit}}" if src else None
        if pushed.status == 0:
            self.update_refs({**tracking, **(with_refs or {})})
        return pushed

    def _restore_origin_url(self) -> None:
        """An agent can repoint the clone's ``origin`` (its worktree shares the config); put
        it back, so a person's ``git fetch`` in the clone and the next ``open`` see the truth.
        Asked of git only when the config file changed since it was last found right."""
        config = self.integration / ".git" / "config"
        stamp = _stamp(config)
        if stamp is not None and _CONFIG_CHECKED.get(self.root) == stamp:
            return
        self._check_origin_url()
        stamp = _stamp(config)
        if stamp is None:
            _CONFIG_CHECKED.pop(self.root, None)
        else:
            _CONFIG_CHECKED[self.root] = stamp

    def _check_origin_url(self) -> None:
        listed = self.git(
            self.integration, "config", "--get-regexp", r"^remote\.origin\.(url|pushurl)$",
            check=False,
        )  # fmt: skip
        values = [line.partition(" ") for line in listed.splitlines()]
        url = next((v for k, _, v in values if k == "remote.origin.url"), "")
        pushurl = [v for k, _, v in values if k == "remote.origin.pushurl"]
        if normalise_origin(url) == self.origin and not pushurl:
            return
        with self.config_lock:
            self.git(self.integration, "config", "remote.origin.url", self.origin)
            self.git(
                self.integration, "config", "--unset-all", "remote.origin.pushurl", check=False
            )
        log.warning(
            "the origin remote of %s had been changed (url %r, pushurl %r), likely by an agent; "
            "restored it to %s",
            self.integration, url, pushurl or None, self.origin,
        )  # fmt: skip

    # --- what this run pushed to base ----------------------------------------------------

    def remember_pushed(self, sha: str) -> None:
        _PUSHED_TO_BASE.setdefault(self.root, []).append(sha)

    def pushed_to_base(self) -> list[str]:
        """The commits tgflow pushed to base since ``open``, oldest first."""
        return list(_PUSHED_TO_BASE.get(self.root, []))

    # --- refs ----------------------------------------------------------------------------

    def ref_exists(self, ref: str) -> bool:
        return self.commit_of(ref) is not None

    def commit_of(self, ref: str) -> str | None:
        """The commit ``ref`` (any revision of tgflow's clone) names (a tag peeled), None
        when it names none. Read through the clone's one reader (``runner.ObjectReader``),
        as every lookup of a name or a file of tgflow's clone is: no command each."""
        found = reader(self.integration).info(f"{ref}^{{commit}}")
        return None if found is None else found[0]

    def commit(self, ref: str) -> str:
        """``commit_of``, for a ref that must name a commit (base, HEAD): a ``GitError``
        when it does not, as ``git rev-parse`` would fail."""
        found = self.commit_of(ref)
        if found is None:
            raise GitError(["rev-parse", ref], self.integration, 128, f"no commit named {ref}")
        return found

    def commits_of(self, *refs: str) -> dict[str, str]:
        """``commit_of`` for several full ref names (``refs/...``): the ones that name a
        commit, with it."""
        found = reader(self.integration).infos([f"{ref}^{{commit}}" for ref in refs])
        return {ref: each[0] for ref, each in zip(refs, found, strict=True) if each is not None}

    def tree_of(self, ref: str) -> str:
        """The tree of the commit ``ref`` names (``git rev-parse ref^{tree}``)."""
        found = reader(self.integration).info(f"{ref}^{{tree}}")
        if found is None:
            raise GitError(["rev-parse", ref], self.integration, 128, f"no tree of {ref}")
        return found[0]

    def update_refs(
        self, changes: Mapping[str, str | None], expected: Mapping[str, str] | None = None
    ) -> None:
        """Set refs to commits, or delete them (None), in one transaction of the clone's ref
        writer (``runner.RefWriter``, no command each): all of them or, on any failure (a ref
        in ``expected`` that has moved from the commit given there), none."""
        was = expected or {}
        lines = [
            f"update {ref} {sha} {was.get(ref, '')}".rstrip()
            if sha is not None
            else f"delete {ref} {was.get(ref, '')}".rstrip()
            for ref, sha in changes.items()
        ]
        if lines:
            writer(self.integration, self.identity).transaction(lines)

    def head(self, cwd: Path | None = None) -> str:
        if cwd is None or cwd == self.integration:
            return self.commit("HEAD")
        return self.git(cwd, "rev-parse", "HEAD")

    def base_ref(self) -> str:
        return f"refs/heads/{self.base}"

    def settled(self) -> str:
        """The newest commit of base that is not a merge still being validated: what a node
        may start from, or read its task from, without the merge lock (base itself moves
        through merges that are reset when their validation fails)."""
        return self._settled_ref() or self.commit(self.base_ref())

    def base_and_settled(self) -> tuple[str, str]:
        """Base's commit and ``settled``, read together (the reader: no command)."""
        found = self.commits_of(self.base_ref(), SETTLED_REF)
        return found[self.base_ref()], found.get(SETTLED_REF) or found[self.base_ref()]

    def _settled_ref(self) -> str | None:
        return self.commit_of(SETTLED_REF)

    def _settle_at_start(self, push: bool) -> None:
        """What a run may start from: origin's base when pushing. Else the local base, less
        what a killed run left on it beyond the last settled commit (a merge it was still
        validating: never validated, so never kept; its branch still holds the work)."""
        if push:
            self.git(
                self.integration, "update-ref", SETTLED_REF, f"refs/remotes/origin/{self.base}"
            )
            return
        settled = self._settled_ref()
        base = self.commit(self.base_ref())
        if settled is not None and settled != base and self.is_ancestor(settled, base):
            log.warning(
                "%s held commits of a run that stopped before validating them; dropped them "
                "(base back at %s)", self.integration, settled[:10],
            )  # fmt: skip
            self.git(self.integration, "checkout", "--quiet", "--force", self.base)
            self.reset_to(settled)
        self.settle()

    def settle(self) -> None:
        """Base, as it stands now, is settled (the caller holds the merge lock). A push of
        base settles it itself (``push(with_refs=)``, in ``base._push_base``)."""
        self.git(self.integration, "update-ref", SETTLED_REF, self.base_ref())

    def exists_at(self, rev: str, rel: str) -> bool:
        """``rel`` is a file or folder of ``rev``."""
        return reader(self.integration).info(f"{rev}:{rel}") is not None

    def show(self, rev: str, rel: str) -> str | None:
        """A file's text at ``rev`` (None when it has none): read from git, so it needs no
        lock on the integration worktree. A commit's files never change, so what was read
        at a commit id is kept (every node reads the conventions at the same settled base)."""
        if FULL_SHA.fullmatch(rev):
            return _show_at_commit(self.integration, rev, rel)
        return _show(self.integration, rev, rel)

    def commits_ahead(self, ref: str) -> list[str]:
        """Commits of ``ref`` not on base, oldest first."""
        out = self.git(self.integration, "rev-list", "--reverse", ref, f"^{self.base_ref()}")
        return out.split()

    def commits_beyond_base(self, ref: str, base: str | None = None) -> list[tuple[str, str]]:
        """(commit, subject) of each commit of ``ref`` not on base (``base``: the commit to
        count from instead), oldest first: read from the objects when ``ref`` is base plus a
        line of commits (``history.line_on``), else one ``git log``."""
        base_sha, sha = base or self.commit(self.base_ref()), self.commit(ref)
        line = history.line_on(self.integration, base_sha, sha)
        if line is not None:
            return [(c.sha, c.subject) for c in line]
        out = self.git(self.integration, "log", "--reverse", "--format=%H %s", sha, f"^{base_sha}")
        return [(c, subject) for c, _, subject in (x.partition(" ") for x in out.split("\n") if x)]

    def files_changed(self, ref: str, base: str | None = None) -> list[str]:
        """Files ``ref`` changes relative to where it meets base (``base``: base's commit,
        when the caller has read it) (``A...B``: from their merge base, as ``git merge-base``
        finds it; a file renamed counts under both names): read from the two trees when
        ``ref`` is base plus a line of commits, else one ``git diff``. Kept by the two
        commits: a node asks again, unchanged, when it merges."""
        base_sha, sha = base or self.commit(self.base_ref()), self.commit(ref)
        return list(_files_changed(self.integration, base_sha, sha))

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether ``a``'s commit is ``b``'s or one of its ancestors (False when either names
        no commit): the names read through the reader, the answer kept by the two commits."""
        named = reader(self.integration).infos([f"{a}^{{commit}}", f"{b}^{{commit}}"])
        if named[0] is None or named[1] is None:
            return False
        sha_a, sha_b = named[0][0], named[1][0]
        if sha_a == sha_b or sha_a in self._parents(sha_b):  # e.g. a session's one commit
            return True
        key = (self.root, sha_a, sha_b)
        found = _ANCESTRY.get(key)
        if found is None:
            found = self.succeeds(self.integration, "merge-base", "--is-ancestor", sha_a, sha_b)
            if len(_ANCESTRY) >= _ANCESTRY_MAX:
                _ANCESTRY.clear()
            _ANCESTRY[key] = found
        return found

    def _parents(self, sha: str) -> list[str]:
        """The parents of commit ``sha``, from its object (the reader)."""
        found = reader(self.integration).contents(sha)
        if found is None or found[0] != "commit":
            return []
        header = found[1].split(b"\n\n", 1)[0].decode("ascii", "replace")
        return [line[7:] for line in header.split("\n") if line.startswith("parent ")]

    def in_merge(self, cwd: Path) -> bool:
        return self.succeeds(cwd, "rev-parse", "-q", "--verify", "MERGE_HEAD")

    # --- the integration worktree --------------------------------------------------------

    def fetch(self) -> None:
        """Every branch and checkpoint of the origin, as it is now. A node's push records what
        it pushed in the same tracking refs, outside the merge lock: a fetch that read one
        before that push moved it is refused by git ("is at X but expected Y") for that ref
        and asked again (a fetch is the same whenever it is made)."""
        self._restore_origin_url()
        args = [
            "fetch", "--quiet", "--prune", self.origin,
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tgflow/checkpoint/*:refs/tgflow/origin-checkpoint/*",  # git/checkpoint.py
        ]  # fmt: skip
        for attempt in range(3):
            fetched = run_git(self.integration, *args, identity=self.identity, check=False)
            if fetched.status == 0:
                return
            if attempt == 2 or "but expected" not in fetched.err:
                raise GitError(args, self.integration, fetched.status, fetched.output)

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
        return self.mark_clean()

    def stand_on(self, ref: str) -> str:
        """``reset_to``, without its two commands when the integration worktree is known to
        be exactly at ``ref`` already: tgflow left it clean on that commit (``mark_clean``)
        and no git has written its index since (git replaces the file: a new inode). Only
        tgflow works there, under the merge lock; what anything else might leave (an
        untracked file in a merge's way) fails that merge, and its failure resets."""
        sha, head = self.commit(ref), self.head()
        if sha == head and _CLEAN_AT.get(self.root) == (head, self._index_stamp()):
            return head
        return self.reset_to(ref)

    def mark_clean(self) -> str:
        """The integration worktree holds nothing but HEAD's commit (the caller knows: it
        reset it, or committed all it changed there). Returns HEAD."""
        head = self.head()
        _CLEAN_AT[self.root] = (head, self._index_stamp())
        return head

    def _index_stamp(self) -> tuple[int, int, int] | None:
        return _stamp(self.integration / ".git" / "index")

    # --- task files on base --------------------------------------------------------------

    def load_tasks(self, tasks_dir: str = "tasks") -> LoadResult:
        """The task files as they are on base (statuses live there)."""
        return load_tasks(self.integration / tasks_dir)

    def find_task(self, task_id: str, tasks_dir: str = "tasks") -> Task | None:
        return next((t for t in self.load_tasks(tasks_dir).tasks if t.id == task_id), None)
