"""The bubblewrap sandbox an agent session (and a validation command) runs in.

An agent is untrusted code: whatever it runs may write anywhere it can and start daemons that
outlive it. Inside the sandbox the whole machine is read-only except the session's own paths
(its checkout, that checkout's git dir, a private temp dir, the agent CLI's state dirs), the
origin and the user's secrets are hidden, and the session is a PID namespace of its own whose
PID 1 is bwrap: when bwrap ends (the command returned, tgflow killed it, or tgflow died and
``--die-with-parent`` fired) the kernel ends every process in it, double-forked ``setsid``
daemons included.

The network stays shared (the agent reaches its model, maybe on 127.0.0.1), and so does the
real ``/tmp``, read-only: test homes, venvs and repositories live there, and the session's temp
is ``tmp`` through ``TMPDIR``. HOME stays read-only too: an agent writing ``~/.gitconfig``
could redirect tgflow's own pushes (``url.insteadOf``). Facts behind every choice:
shared/research/scale-and-isolation.md.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Credentials under HOME an agent has no business reading: always hidden (a folder becomes an
# empty read-only tmpfs, a file reads as empty).
HOME_SECRETS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".password-store",
    ".config/gh",
    ".config/gcloud",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
)
NAMESPACES = ("--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session")
PROBE_TIMEOUT_S = 30.0


def bwrap_program() -> str:
    return shutil.which("bwrap") or "bwrap"


@dataclass(frozen=True)
class Sandbox:
    """The machine read-only except `writable`; its own PID namespace, dying with its parent."""

    writable: tuple[Path, ...]  # e.g. the task checkout and its git dir (created if missing)
    tmp: Path  # a private writable temp dir for the session; TMPDIR points there
    # Paths replaced by an empty read-only tmpfs (the origin when it is a local path); the
    # secrets of HOME_SECRETS under the HOME of tgflow's user are always hidden.
    hidden: tuple[Path, ...] = ()
    # Paths inside a writable one that stay read-only (the .git of a clone whose files the
    # commands may change: its config, hooks and refs are tgflow's).
    readonly: tuple[Path, ...] = ()

    def wrap(
        self, argv: Sequence[str], cwd: Path, extra_writable: Sequence[Path] = ()
    ) -> list[str]:
        """``argv`` as bwrap runs it in this sandbox, from ``cwd``; ``extra_writable`` adds the
        paths one session needs besides the sandbox's (an agent CLI's state dirs).

        Creates the writable paths that are missing: bwrap binds only what exists.
        """
        writable = {_absolute(p) for p in (*self.writable, *extra_writable, self.tmp)}
        for path in writable:
            path.mkdir(parents=True, exist_ok=True)
        home = Path.home()
        candidates = {_absolute(p) for p in (*self.hidden, *(home / n for n in HOME_SECRETS))}
        hidden = {p for p in candidates if p.exists()} - writable  # nothing there to hide
        mounts: list[tuple[Path, list[str]]] = [(p, ["--bind", str(p), str(p)]) for p in writable]
        mounts += [
            (p, ["--ro-bind", str(p), str(p)])
            for p in map(_absolute, self.readonly)
            if p.exists() and p not in writable
        ]
        for path in hidden:
            if path.is_dir():
                mounts.append((path, ["--tmpfs", str(path)]))
            else:  # a file: reads as empty, writes vanish
                mounts.append((path, ["--dev-bind", "/dev/null", str(path)]))
        # A mount inside another must come after it, or the outer one would cover it.
        mounts.sort(key=lambda mount: (len(mount[0].parts), mount[0]))
        args = [bwrap_program(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for _, mount in mounts:
            args += mount
        # Read-only once everything inside them is mounted (a mount point needs a mkdir).
        for path in sorted(p for p in hidden if p.is_dir()):
            args += ["--remount-ro", str(path)]
        return [*args, *NAMESPACES, "--chdir", str(cwd), "--", *argv]

    def env(self) -> dict[str, str]:
        """What to add to the process environment: temp files go to the private temp dir."""
        return {"TMPDIR": str(self.tmp)}


def sandbox_refusal(returncode: int | None, lines: Sequence[str]) -> str | None:
    """bwrap's own message when it could not set the sandbox up or exec the program (it then
    exits 1 having printed only that), else None: the command itself ran."""
    if returncode == 1 and lines and lines[0].startswith("bwrap: "):
        return lines[0]
    return None


def _absolute(path: Path) -> Path:
    """Symlinks resolved: bwrap mounts onto the real path, and two spellings are one mount."""
    return Path(path).resolve()


@functools.cache
def sandbox_problem() -> str | None:
    """None when bubblewrap works on this machine, else one line: why, and how to fix (install
    the Debian package `bubblewrap`, or set sandbox = "none"). Probed once per process (cached).
    """
    fix = (
        "install the Debian package `bubblewrap` (apt-get install bubblewrap) "
        'or set sandbox = "none"'
    )
    program = shutil.which("bwrap")
    if program is None:
        return f"bubblewrap (bwrap) is not on PATH: {fix}"
    probe = [program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *NAMESPACES]
    try:
        done = subprocess.run(
            [*probe, "--", "true"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap ({program}) could not run: {e}; {fix}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"bubblewrap ({program}) does not work here: {why}; {fix}"
    return None
