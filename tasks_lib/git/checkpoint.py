"""A session's work copied to the origin while the agent works, so that a machine that dies
(its disk gone with it) loses at most the last seconds of it.

The copy is one ref per task on the origin, ``refs/tgflow/checkpoint/<slug>``, never the task
branch (only tgflow moves that, between sessions): the checkout's HEAD after each agent commit
and, every interval, a commit of its whole working tree on top of HEAD (what the agent has not
committed yet). The next run to start the task, on any machine, resumes from the checkpoint
when it holds more than the branch (``start_task``).

Nothing of this runs git in the agent's repository with its own config: it is the agent's
while the session runs (a ``filter`` or ``sshCommand`` setting there would run code outside
the sandbox). HEAD is read from the git dir's files; the working tree is hashed with tgflow's
clone as the repository and a private index (the agent's index, HEAD and files untouched);
the push is made from tgflow's clone with the checkout's objects lent for that one command
(``GIT_ALTERNATE_OBJECT_DIRECTORIES``), so no ref of tgflow's clone ever names an object it
lacks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks_lib.git.links import git_dir_of
from tasks_lib.git.runner import run_git
from tasks_lib.git.workspace import FULL_SHA, TASK_TRAILER, Workspace, slug

CHECKPOINT_REFS = "refs/tgflow/checkpoint/"  # on the origin, one per task
FETCHED_CHECKPOINTS = "refs/tgflow/origin-checkpoint/"  # the origin's, as last fetched
# An operation in progress in the checkout: its HEAD or index is not the agent's work yet.
_BUSY = (
    "index.lock", "HEAD.lock", "MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD"
)  # fmt: skip


PACKED_REFS_MAX = 1 << 20  # bytes of packed-refs read at most (a checkout's has a handful)


def _agent_file(path: Path, limit: int) -> str:
    """A file of the agent's git dir, read with suspicion while the agent runs: never through
    a symlink (to /dev/zero, a fifo, a file of someone else's) and never more than ``limit``
    bytes; OSError otherwise."""
    if path.is_symlink() or not path.is_file():
        raise OSError(f"{path} is not a plain file")
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return data.decode("ascii")


def checkout_head(path: Path) -> str | None:
    """The checkout's HEAD commit, read from its git dir's files (no git in the agent's
    repository); None while an operation is in progress or when it cannot be told."""
    git_dir = git_dir_of(path)
    if any((git_dir / name).exists() for name in _BUSY):
        return None
    try:
        head = _agent_file(git_dir / "HEAD", 512).strip()
        if head.startswith("ref: "):
            ref = head.removeprefix("ref: ")
            if not ref.startswith("refs/") or ".." in ref.split("/"):
                return None  # not a branch of this repository
            loose = git_dir / ref
            if loose.is_file():
                head = _agent_file(loose, 512).strip()
            else:
                lines = _agent_file(git_dir / "packed-refs", PACKED_REFS_MAX).splitlines()
                found = [line.split(" ")[0] for line in lines if line.endswith(f" {ref}")]
                head = found[0] if found else ""
    except (OSError, UnicodeDecodeError):
        return None
    return head if FULL_SHA.fullmatch(head) else None


def checkpoint(ws: Workspace, task_id: str, path: Path, *, with_files: bool) -> str | None:
    """Push the checkout's state to the task's checkpoint ref on the origin: its HEAD, or with
    ``with_files`` a commit of its working tree on top of HEAD when that differs. Returns the
    commit pushed; None when the checkout is busy (an operation in progress) or the push
    failed (the next try will do)."""
    head = checkout_head(path)
    if head is None:
        return None
    lent = {"GIT_ALTERNATE_OBJECT_DIRECTORIES": str(git_dir_of(path) / "objects")}
    sha = _snapshot(ws, task_id, path, head, lent) if with_files else head
    pushed = run_git(
        ws.integration, "push", "--quiet", "--force", ws.origin,
        f"{sha}:{CHECKPOINT_REFS}{slug(task_id)}", check=False, env=lent,
    )  # fmt: skip
    return sha if pushed.status == 0 else None


def _snapshot(ws: Workspace, task_id: str, path: Path, head: str, lent: dict[str, str]) -> str:
    """A commit of the checkout's files (what ``git add -A`` would take) on top of ``head``,
    made in tgflow's clone with a private index; ``head`` itself when nothing differs."""
    with tempfile.TemporaryDirectory(prefix="tgflow-checkpoint-") as tmp:
        env = {
            **lent,
            "GIT_DIR": str(ws.integration / ".git"),
            "GIT_WORK_TREE": str(path),
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
        }
        run_git(path, "read-tree", head, env=env)
        run_git(path, "add", "-A", env=env)
        tree = run_git(path, "write-tree", env=env).out
        if tree == run_git(path, "rev-parse", f"{head}^{{tree}}", env=env).out:
            return head
        message = (
            f"tgflow: checkpoint of {task_id} (work not committed yet)\n\n{TASK_TRAILER}: {task_id}"
        )
        return run_git(
            path, "commit-tree", tree, "-p", head, "-m", message, identity=ws.identity, env=env
        ).out


def drop_checkpoint(ws: Workspace, task_id: str, pushed: bool, seen: bool | None = None) -> bool:
    """The task's checkpoint is no longer needed (its work landed, or is on its branch):
    deleted on the origin and here, when this attempt ``pushed`` one or the last fetch saw
    one (``seen``: whether it did, when the caller has read that ref). False when the origin
    would not delete it."""
    name = slug(task_id)
    fetched = f"{FETCHED_CHECKPOINTS}{name}"
    if not pushed and not (ws.ref_exists(fetched) if seen is None else seen):
        return True
    deleted = ws.push(f":{CHECKPOINT_REFS}{name}").status == 0
    ws.git(ws.integration, "update-ref", "-d", fetched, check=False)
    return deleted
