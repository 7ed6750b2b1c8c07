"""The scripted demo agent: a real subprocess that does what a task's script says.

It reads only its prompt, like a real agent, so the embedded demo and the tests exercise the
same path (prompt file, worktree, process group, output stream, commits) as a model would.
The script is the first ```tgflow-script block in the prompt (see notes/CONTRACTS.md).

Run as ``python -m tasks_lib.agents.scripted --prompt-file FILE`` with cwd = the worktree.
Exit codes: 0 done (or blocked via Safe Exit), 1 failed, 2 bad script.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from tasks_lib.agents.command import CommandAgent

SCRIPT_BLOCK = re.compile(r"^```tgflow-script[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
RESOLVE_HEADING = re.compile(r"^## Resolve merge conflicts[ \t]*$", re.M)
BLOCKED_FILE = Path(".tgflow/blocked.md")
FALLBACK_IDENTITY = (
    "-c",
    "user.name=tgflow scripted agent",
    "-c",
    "user.email=scripted@tgflow.invalid",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WriteFile(_Strict):
    path: str
    content: str


class AppendFile(_Strict):
    path: str
    text: str


class ReplaceText(_Strict):
    path: str
    old: str
    new: str


class Step(_Strict):
    """One script step: a mapping with exactly one of these keys."""

    write: WriteFile | None = None
    append: AppendFile | None = None
    replace: ReplaceText | None = None
    run: str | None = None
    sleep: float | None = Field(default=None, ge=0)
    fail: str | None = None
    fail_attempts: int | None = Field(default=None, ge=0)
    block: str | None = None
    hang: bool | None = None
    touch_task_file: bool | None = None
    no_commit: bool | None = None
    commit: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [k for k, v in self if v is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one action, got {given or 'none'}")
        return self

    @property
    def action(self) -> str:
        return next(k for k, v in self if v is not None)


SCRIPT = TypeAdapter(list[Step])


class Prompt(BaseModel):
    """What the agent takes from its prompt (the markers prompt.py emits)."""

    task_id: str
    attempt: int = 1
    task_file: str | None = None
    resolve_conflicts: bool = False
    script: str | None = None

    @classmethod
    def parse(cls, text: str) -> Prompt:
        def marker(name: str) -> str | None:
            m = re.search(rf"^{name}:[ \t]*(.+?)[ \t]*$", text, re.M)
            return m.group(1) if m else None

        block = SCRIPT_BLOCK.search(text)
        return cls(
            task_id=marker("Task") or "unknown-task",
            attempt=int(marker("Attempt") or 1),
            task_file=marker("Task file"),
            resolve_conflicts=bool(RESOLVE_HEADING.search(text)),
            script=block.group(1) if block else None,
        )


def say(message: str) -> None:
    print(f"scripted: {message}", flush=True)


def stop(message: str, code: int = 1) -> NoReturn:
    say(message)
    sys.exit(code)


def git(*args: str, identity: bool = False) -> str:
    argv = ["git", *(commit_identity() if identity else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        stop(f"git {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def commit_identity() -> tuple[str, ...]:
    """A fallback identity only when the repo has none (CI, a fresh worker)."""
    for key in ("user.name", "user.email"):
        if subprocess.run(["git", "config", key], capture_output=True).returncode != 0:
            return FALLBACK_IDENTITY
    return ()


def inside(path: str) -> Path:
    """A script path, kept inside the worktree."""
    target = Path(path)
    root = Path.cwd().resolve()
    if target.is_absolute() or root not in (root / target).resolve().parents:
        stop(f"path {path!r} is outside the worktree; use a path relative to the repo root", 2)
    return target


def run_step(step: Step, prompt: Prompt) -> None:
    """Do one step; steps that end the session exit from here."""
    match step.action:
        case "write":
            assert step.write is not None
            target = inside(step.write.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.write.content, encoding="utf-8")
            say(f"write {target}")
        case "append":
            assert step.append is not None
            target = inside(step.append.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as f:
                f.write(step.append.text)
            say(f"append {target}")
        case "replace":
            assert step.replace is not None
            target = inside(step.replace.path)
            text = target.read_text(encoding="utf-8") if target.is_file() else ""
            if step.replace.old not in text:
                stop(f"replace in {target}: text not found: {step.replace.old!r}")
            target.write_text(text.replace(step.replace.old, step.replace.new, 1), encoding="utf-8")
            say(f"replace in {target}")
        case "run":
            assert step.run is not None
            say(f"run {step.run}")
            code = subprocess.run(step.run, shell=True, stderr=subprocess.STDOUT).returncode
            if code != 0:
                stop(f"command failed with exit code {code}: {step.run}")
        case "sleep":
            assert step.sleep is not None
            say(f"thinking for {step.sleep:g}s")
            time.sleep(step.sleep)
        case "fail":
            stop(f"failing as scripted: {step.fail}")
        case "fail_attempts":
            assert step.fail_attempts is not None
            if prompt.attempt <= step.fail_attempts:
                stop(
                    f"failing as scripted on attempt {prompt.attempt} "
                    f"(fails while attempt <= {step.fail_attempts})"
                )
            say(f"attempt {prompt.attempt}: past the scripted failures, going on")
        case "block":
            BLOCKED_FILE.parent.mkdir(exist_ok=True)
            BLOCKED_FILE.write_text(f"{step.block}\n", encoding="utf-8")
            stop(f"blocked (Safe Exit): {step.block}", 0)
        case "hang":
            if step.hang:
                hang()
        case "touch_task_file":
            if step.touch_task_file:
                if not prompt.task_file:
                    stop("touch_task_file: the prompt has no 'Task file:' line")
                with inside(prompt.task_file).open("a", encoding="utf-8") as f:
                    f.write("\nEdited by the scripted agent (it should not have).\n")
                say(f"append {prompt.task_file}")
        case "no_commit" | "commit":
            pass  # read by commit_all


def hang() -> NoReturn:
    """Go silent forever, with a child in our process group, like a wedged agent."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e9)"])
    say(f"hanging (pid {os.getpid()}, child pid {child.pid})")
    while True:
        time.sleep(3600)


def commit_all(prompt: Prompt, steps: list[Step]) -> None:
    summary = next((s.commit for s in steps if s.commit), "scripted changes")
    git("add", "-A")
    # The workspace ignores .tgflow/ already; unstage it too for a repo that does not.
    git("reset", "-q", "--", str(BLOCKED_FILE.parent))
    if not git("diff", "--cached", "--name-only").strip():
        say("nothing to commit")
        return
    git("commit", "-q", "-m", f"{prompt.task_id}: {summary}", identity=True)
    say(f"commit {git('rev-parse', '--short', 'HEAD').strip()} {prompt.task_id}: {summary}")


def resolve_conflicts() -> None:
    """Resolve every conflicted file by keeping both sides (ours, then theirs)."""
    files = [n for n in git("diff", "-z", "--name-only", "--diff-filter=U").split("\0") if n]
    for name in files:
        path = Path(name)
        if not path.is_file():
            stop(f"cannot keep both sides of {name}: one side deleted it; resolve it by hand")
        path.write_text(keep_both(path.read_text(encoding="utf-8")), encoding="utf-8")
        git("add", "--", name)
        say(f"resolved {name} (kept both sides)")
    merging = (
        subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "MERGE_HEAD"], capture_output=True
        ).returncode
        == 0
    )
    if not merging:
        say("no merge in progress" if not files else "resolved; no merge in progress to commit")
        return
    git("commit", "-q", "--no-edit", identity=True)
    say(f"commit {git('rev-parse', '--short', 'HEAD').strip()} merge with conflicts resolved")


def keep_both(text: str) -> str:
    """Drop conflict markers (and any diff3 base section), keeping ours then theirs."""
    out: list[str] = []
    state = "clean"
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<< ") or line.rstrip("\r\n") == "<<<<<<<":
            state = "ours"
        elif state == "ours" and line.startswith("|||||||"):
            state = "base"
        elif state in ("ours", "base") and line.rstrip("\r\n") == "=======":
            state = "theirs"
        elif state == "theirs" and line.startswith(">>>>>>>"):
            state = "clean"
        elif state != "base":
            out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks_lib.agents.scripted")
    parser.add_argument("--prompt-file", type=Path, required=True)
    args = parser.parse_args(argv)
    prompt = Prompt.parse(args.prompt_file.read_text(encoding="utf-8"))
    say(f"task {prompt.task_id}, attempt {prompt.attempt}")
    if prompt.resolve_conflicts:
        resolve_conflicts()
        return
    if prompt.script is None:
        stop("no ```tgflow-script block in the prompt: nothing I know how to do")
    try:
        steps = SCRIPT.validate_python(yaml.safe_load(prompt.script) or [])
    except (yaml.YAMLError, ValidationError) as e:
        stop(f"the tgflow-script block is not a valid list of steps: {e}", 2)
    for step in steps:
        run_step(step, prompt)
    if any(s.no_commit for s in steps):
        say("leaving the changes uncommitted (no_commit)")
    else:
        commit_all(prompt, steps)
    say("done")


class ScriptedAgent(CommandAgent):
    """The Agent backend that runs this module as a watched subprocess."""

    def __init__(self) -> None:
        # -P: never import a tasks_lib that happens to live in the worktree.
        argv = [sys.executable, "-P", "-m", "tasks_lib.agents.scripted"]
        super().__init__([*argv, "--prompt-file", "{prompt_file}"], name="scripted")


if __name__ == "__main__":
    main()
