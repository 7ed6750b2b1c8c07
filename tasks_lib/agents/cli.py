"""What every real agent CLI backend shares: finding the CLI, a quiet headless environment,
reading its JSON lines, and ``CliAgent``, the command backend driven by one preset.

A preset (``opencode.py``, ``claude.py``, ``codex.py``, ``aider.py``) knows its CLI's argv,
the environment that makes it run headless and offline-safe (isolated home when we give it a
provider, no autoupdate/telemetry, stdin closed) and how to read its output into a ``Tally``.
The verdict comes from those events, never the exit code alone. Facts behind every choice:
shared/research/agent-clis.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from tasks_lib.agents.base import AgentError, Outcome, SessionRequest, SessionResult
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.process import ProcessResult
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.agents.tally import Tally

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin"
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "NO_COLOR": "1",
}


class CliMissing(AgentError):
    """The agent CLI is not installed: the message says where we looked and how to install."""


def find_cli(binary: str) -> str:
    """The project's pinned install in .tools first, then PATH."""
    path = os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", "")])
    found = shutil.which(binary, path=path)
    if found is None:
        raise CliMissing(
            f"agent CLI {binary!r} not found in {TOOLS_BIN} or on PATH; "
            "run scripts/install-agent-clis.sh"
        )
    return found


def base_dirs(env: Mapping[str, str]) -> dict[str, Path]:
    """HOME and the XDG base dirs a CLI started with ``env`` uses, the XDG defaults filled in:
    where its state dirs are (``CliPreset.state_dirs``)."""
    home = Path(env.get("HOME") or Path.home())
    defaults = {
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }
    return {"HOME": home, **{k: Path(env.get(k) or d) for k, d in defaults.items()}}


def isolated_home(home: Path) -> dict[str, str]:
    """A fresh HOME and XDG dirs: no user config, auth or caches leak in or out."""
    dirs = base_dirs({"HOME": str(home)})
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


def parse_json(line: str) -> dict[str, Any] | None:
    """The event on a JSONL line, or None: CLIs mix log lines and partial writes in."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def error_text(error: Any) -> str:
    """The human message inside whatever error shape a CLI prints (also a JSON body as text)."""
    if isinstance(error, str) and error.startswith("{"):
        with contextlib.suppress(json.JSONDecodeError):
            error = json.loads(error)
            inner = error.get("error") if isinstance(error, dict) else None
            error = inner if isinstance(inner, dict) else error
    if isinstance(error, dict):
        data = error.get("data")
        for candidate in (
            data.get("message") if isinstance(data, dict) else None,
            error.get("message"),
            error.get("name"),
        ):
            if candidate:
                return str(candidate)
        return json.dumps(error)
    return str(error)


def provider_of(settings: AgentSettings, preset: str) -> str:
    """Whose usage limit a session counts against: the endpoint it is given, else the
    provider named in its model (OpenCode's ``anthropic/claude-...``), else the CLI's own
    (Claude Code's, Codex's login)."""
    if settings.base_url:
        return settings.base_url
    if settings.model and "/" in settings.model:
        return settings.model.split("/", 1)[0]
    return preset


class _EitherCancel(threading.Event):
    """Set by the caller's cancel or by us (a preset deciding to cut the session)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self.outer.is_set()


class CliPreset(ABC):
    """One CLI's argv, environment and output parser: all a new CLI needs to write.

    It holds settings only, never session state, so one preset serves concurrent sessions.
    """

    name: ClassVar[str]
    binary: ClassVar[str]

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    @abstractmethod
    def argv(self, exe: str, request: SessionRequest) -> list[str]: ...

    @abstractmethod
    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        """Variables to add; ``home`` is a private temp dir for this session."""

    @abstractmethod
    def parse(self, line: str, tally: Tally) -> None: ...

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """The dirs the CLI writes (config, sessions, caches) when started with ``env``: all a
        sandboxed session may write besides its checkout and temp dir. HOME itself is not
        one: an agent writing ``~/.gitconfig`` could redirect tgflow's pushes."""
        return []

    def should_stop(self, tally: Tally) -> bool:
        """Cut the session now: the provider retrying without end (``tally.error`` says why),
        or refusing for its usage limit (the CLI would hold the session, waiting for the reset
        or retrying into the limit; the node waits instead, its session ended)."""
        retries = tally.provider_retries > self.settings.max_provider_retries
        return retries or tally.limit is not None


class CliAgent(CommandAgent):
    """A real agent CLI behind the Agent interface: the command backend plus a preset.

    The preset's parser reads every line as it arrives, into a tally of the session's own
    (no per-run state on the instance, so one agent can run many sessions at once): to cut a
    session that will not end by itself, and for the verdict, tokens and cost (the process
    keeps only the last lines of a long session).
    """

    def __init__(self, preset: CliPreset) -> None:
        super().__init__([preset.binary], name=preset.name)
        self.preset = preset
        self.model = preset.settings.model
        self.provider = provider_of(preset.settings, preset.name)

    def argv(self, request: SessionRequest, prompt_file: Path) -> list[str]:
        return self.preset.argv(find_cli(self.preset.binary), request)

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        return self.preset.state_dirs(env)

    def run(self, request: SessionRequest) -> SessionResult:
        settings = self.preset.settings
        try:  # set-up problems are this session's failure, said plainly
            find_cli(self.preset.binary)
            settings.api_key()
        except (CliMissing, ValueError) as e:
            return SessionResult(outcome=Outcome.FAILED, reason=str(e))
        live = Tally()
        stop = _EitherCancel(request.cancel)

        def on_line(line: str) -> None:
            self.preset.parse(line, live)
            if live.cut is None and not live.finished:  # a finished turn is paid for: let it end
                live.cut = request.over_budget(*live.spent())
            if live.cut is not None or self.preset.should_stop(live):
                stop.set()
            request.on_line(line)

        with tempfile.TemporaryDirectory(prefix=f"tgflow-{self.name}-") as tmp:
            env = {
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
                **QUIET_ENV,
                **self.preset.env(request, Path(tmp)),
                **settings.extra_env,
                **request.env,
            }
            inner = replace(
                request,
                env=env,
                on_line=on_line,
                cancel=stop,
                timeout_s=settings.timeout_s or request.timeout_s,
                idle_timeout_s=settings.idle_timeout_s or request.idle_timeout_s,
            )
            ran = self.run_process(inner)
        return ran if isinstance(ran, SessionResult) else self._judge(ran, inner, live)

    def _judge(self, proc: ProcessResult, request: SessionRequest, tally: Tally) -> SessionResult:
        outer = request.cancel.outer if isinstance(request.cancel, _EitherCancel) else None
        provider = self.provider or self.name
        limit = replace(tally.limit, provider=provider) if tally.limit else None
        if outer is not None and outer.is_set():
            outcome, reason = Outcome.CANCELLED, "cancelled"
        elif limit is not None:  # cut by us, or ended by the CLI on it
            outcome, reason = Outcome.LIMITED, f"usage limit of {limit.provider}: {limit.message}"
        elif proc.cancelled:  # we cut it: the tally says why
            outcome, reason = Outcome.FAILED, tally.cut or tally.error or f"{self.name} stopped"
        elif proc.timed_out:
            outcome = Outcome.TIMED_OUT
            reason = f"{self.name}: no result within {request.timeout_s:g} s"
        elif proc.stalled:
            outcome = Outcome.STALLED
            reason = f"{self.name}: no output for {request.idle_timeout_s:g} s"
        else:
            outcome, reason = tally.verdict(self.name)
            if outcome is Outcome.SUCCEEDED and proc.returncode != 0:
                outcome = Outcome.FAILED
                reason = f"{self.name} reported success"
            if outcome is Outcome.FAILED and not tally.error:
                tail = "\n".join(proc.lines[-10:])
                reason += f" (exit code {proc.returncode}); last output:\n{tail}"
        anomaly = tally.anomaly()
        if anomaly:
            request.on_line(f"tgflow: {anomaly}")
        return SessionResult(
            outcome=outcome,
            reason=reason,
            log=proc.lines,
            duration_s=proc.duration_s,
            tokens_in=tally.tokens_in,
            tokens_out=tally.tokens_out,
            cost_usd=tally.cost_usd,
            tool_errors=tally.tool_errors,
            pids=[proc.pid],
            limit=limit,
        )
