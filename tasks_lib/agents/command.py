"""The generic command backend: any CLI that takes a prompt and works in the current directory.

The argv template may use ``{prompt}`` (the prompt text as one argument), ``{prompt_file}``
(a temporary file holding it, outside the worktree so it is never committed; with a sandbox,
in the session's own temp dir, beside its other temp files), ``{task_id}`` and
``{worktree}``. Real CLI backends subclass this and override ``interpret`` to read outcome,
tokens and cost from the output, and ``state_dirs`` to name what the CLI writes besides the
worktree.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.agents.process import ProcessResult, run_watched
from tasks_lib.agents.sandbox import sandbox_refusal

PLACEHOLDERS = ("{prompt}", "{prompt_file}", "{task_id}", "{worktree}")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def _startable(program: str, cwd: Path, path: str | None) -> bool:
    """Whether exec would find ``program`` from ``cwd``: a path as given (relative to ``cwd``),
    a bare name on ``path``."""
    if os.sep in program:
        return os.access(cwd / program, os.X_OK)
    return shutil.which(program, path=path) is not None


class CommandAgent(Agent):
    def __init__(
        self,
        argv_template: list[str] | str,
        name: str = "command",
        env: dict[str, str] | None = None,
    ) -> None:
        argv = shlex.split(argv_template) if isinstance(argv_template, str) else argv_template
        if not argv:
            raise ValueError("the agent command is empty; give the program to run and its args")
        self.argv_template = list(argv)
        self.name = name
        self.env = dict(env or {})

    def argv(self, request: SessionRequest, prompt_file: Path) -> list[str]:
        values = {
            "{prompt}": request.prompt,
            "{prompt_file}": str(prompt_file),
            "{task_id}": request.task_id,
            "{worktree}": str(request.worktree),
        }
        # One pass, so a value that happens to contain "{task_id}" is never expanded again.
        return [_PLACEHOLDER.sub(lambda m: values[m.group(0)], arg) for arg in self.argv_template]

    def run(self, request: SessionRequest) -> SessionResult:
        ran = self.run_process(request)
        return ran if isinstance(ran, SessionResult) else self.interpret(ran, request)

    def run_process(self, request: SessionRequest) -> ProcessResult | SessionResult:
        """The watched process of one session, or the session's failure when it cannot start."""
        sandbox = request.sandbox
        tmp_dir = None
        if sandbox is not None:  # the prompt file goes with the session's other temp files
            sandbox.tmp.mkdir(parents=True, exist_ok=True)
            tmp_dir = sandbox.tmp
        fd, name = tempfile.mkstemp(prefix="tgflow-prompt-", suffix=".md", dir=tmp_dir)
        prompt_file = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(request.prompt)
            env = {**os.environ, **self.env, **request.env, "PWD": str(request.worktree)}
            argv = self.argv(request, prompt_file)
            try:
                command = argv
                if sandbox is not None:
                    # bwrap would start and then fail to exec: find the program first, so a
                    # missing one is the same failure, naming it, as without a sandbox.
                    if not _startable(argv[0], request.worktree, env.get("PATH")):
                        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
                    env.update(sandbox.env())
                    command = sandbox.wrap(argv, request.worktree, self.state_dirs(env))
                proc = run_watched(
                    command,
                    cwd=request.worktree,
                    env=env,
                    timeout_s=request.timeout_s,
                    idle_timeout_s=request.idle_timeout_s,
                    on_line=request.on_line,
                    cancel=request.cancel,
                )
            except OSError as e:  # exec failed: the session's failure, not tgflow's crash
                return SessionResult(
                    outcome=Outcome.FAILED, reason=self.start_failure(e, argv, env)
                )
        finally:
            prompt_file.unlink(missing_ok=True)
        if sandbox is not None and (refused := sandbox_refusal(proc.returncode, proc.lines)):
            return SessionResult(
                outcome=Outcome.FAILED,
                reason=f"agent command {argv[0]!r} could not start in the sandbox: {refused}; "
                'fix agent_command or set sandbox = "none"',
                log=proc.lines,
                duration_s=proc.duration_s,
                pids=[proc.pid],
            )
        return proc

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """What the agent must write outside its worktree, given its environment: a generic
        command, nothing (it has the sandbox's temp dir); a CLI, its config and data dirs."""
        return []

    def start_failure(self, error: OSError, argv: list[str], env: dict[str, str]) -> str:
        """Why the agent's program could not start, and what to change."""
        program = argv[0]
        if error.errno == errno.E2BIG:
            return (
                f"agent command {program!r} could not start: the prompt is too long to pass "
                "as an argument ({prompt}); use {prompt_file} in agent_command"
            )
        if isinstance(error, FileNotFoundError) and error.filename == program:
            return (
                f"agent command {program!r} not found (PATH={env.get('PATH', '')}): install "
                "it or fix agent_command"
            )
        return (
            f"agent command {program!r} could not start: {error.strerror} ({error.filename}); "
            "fix agent_command"
        )

    def interpret(self, proc: ProcessResult, request: SessionRequest) -> SessionResult:
        """Turn the finished process into a result; backends override to parse their output."""
        if proc.timed_out:
            outcome, reason = Outcome.TIMED_OUT, f"no result after {request.timeout_s:g}s"
        elif proc.stalled:
            outcome, reason = Outcome.STALLED, f"no output for {request.idle_timeout_s:g}s"
        elif proc.cancelled:
            outcome, reason = Outcome.CANCELLED, "cancelled"
        elif proc.returncode == 0:
            outcome, reason = Outcome.SUCCEEDED, ""
        else:
            tail = "\n".join(proc.lines[-10:])
            outcome, reason = Outcome.FAILED, f"exit code {proc.returncode}:\n{tail}"
        return SessionResult(
            outcome=outcome,
            reason=reason,
            log=proc.lines,
            duration_s=proc.duration_s,
            pids=[proc.pid],
        )
