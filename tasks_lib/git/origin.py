"""The origin a run works on: how it is named, where its clone goes, and what is refused before
any work starts (an origin that cannot be reached, or one that would refuse our pushes)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tasks_lib.git import WorkspaceError
from tasks_lib.git.runner import GitTimeout, run_git

LS_REMOTE_TIMEOUT_S = 60.0
# Asking the origin is the first thing a run does: a key passphrase prompt would hang it.
_BATCH_SSH = {"GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}


def _is_url(origin: str) -> bool:
    return "://" in origin or re.match(r"^[\w.-]+@[\w.-]+:", origin) is not None


def normalise_origin(origin: str) -> str:
    """Local paths become absolute (so the same origin is always one key); URLs stay as given."""
    return origin if _is_url(origin) else str(Path(origin).expanduser().resolve())


def local_origin_path(origin: str) -> Path | None:
    """The directory of an origin on this machine, or None for a remote one."""
    if origin.startswith("file://"):
        return Path(origin[len("file://") :])
    return None if _is_url(origin) else Path(origin)


def default_root(origin: str, cache: Path | None = None) -> Path:
    """``<cache>/workspaces/<origin's tail>-<hash>``: one workspace per origin."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", normalise_origin(origin)).strip("-.")[-60:]
    digest = hashlib.sha1(normalise_origin(origin).encode("utf-8")).hexdigest()[:8]
    cache = Path(cache or "~/.cache/tgflow").expanduser()
    return cache / "workspaces" / f"{name}-{digest}"


def remote_heads(origin: str) -> set[str]:
    """The origin's branch names; an origin that cannot be reached is refused in one line."""
    try:
        listed = run_git(
            Path.cwd(),
            "ls-remote",
            "--heads",
            origin,
            check=False,
            timeout_s=LS_REMOTE_TIMEOUT_S,
            env=_BATCH_SSH,
        )
    except GitTimeout:
        raise WorkspaceError(
            f"origin {origin} did not answer within {LS_REMOTE_TIMEOUT_S:g}s; "
            "check the URL and your network."
        ) from None
    if listed.status != 0:
        lines = [x.strip() for x in (listed.err or listed.out).splitlines() if x.strip()]
        fatal = [x.removeprefix("fatal: ") for x in lines if x.startswith("fatal: ")]
        detail = (fatal or lines or ["git ls-remote failed"])[0].rstrip(".")
        raise WorkspaceError(
            f"cannot reach origin {origin}: {detail}. "
            "Check the URL or path, and that your credentials work with `git ls-remote`."
        )
    return {
        line.split("\trefs/heads/", 1)[1]
        for line in listed.out.splitlines()
        if "\trefs/heads/" in line
    }


def refuse_checked_out_origin(origin: str, base: str) -> None:
    """git refuses pushes to the checked-out branch of a non-bare repo: say so before work."""
    path = local_origin_path(origin)
    if path is None:
        return

    def ask(*args: str) -> str:
        return run_git(path, *args, check=False).out

    if ask("rev-parse", "--is-bare-repository") == "true":
        return
    head = ask("symbolic-ref", "-q", "HEAD")
    deny = ask("config", "--get", "receive.denyCurrentBranch")
    if head == f"refs/heads/{base}" and deny in ("", "refuse", "true"):
        raise WorkspaceError(
            f"origin {origin} is a working checkout with '{base}' checked out, so git would "
            f"refuse tgflow's pushes to '{base}'. Use the URL of its remote instead "
            f"(`git -C {origin} remote get-url origin`), or make a bare mirror and run on it: "
            f"`git clone --mirror {origin} {origin.rstrip('/')}.git`. tgflow never forces a push."
        )
