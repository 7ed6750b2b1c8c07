"""Presets for real agent CLIs run as watched subprocesses: OpenCode, Claude Code, Codex, aider.

Each preset knows its CLI's argv, the environment that makes it run headless and offline-safe
(isolated home when we give it a provider, no autoupdate/telemetry, stdin closed) and how to
read its output into a ``Tally``. The verdict comes from those events, never the exit code
alone. Facts behind every choice here: shared/research/agent-clis.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from tasks_lib.agents.base import Outcome, SessionRequest, SessionResult
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


class CliMissing(RuntimeError):
    pass


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


def isolated_home(home: Path) -> dict[str, str]:
    """A fresh HOME and XDG dirs: no user config, auth or caches leak in or out."""
    dirs = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


def parse_json(line: str) -> dict[str, Any] | None:
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


class _EitherCancel(threading.Event):
    """Set by the caller's cancel or by us (a preset deciding to cut the session)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self.outer.is_set()


class CliPreset(ABC):
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

    def should_stop(self, tally: Tally) -> bool:
        """Cut the session now (provider retrying without end); ``tally.error`` says why."""
        return tally.provider_retries > self.settings.max_provider_retries


class CliAgent(CommandAgent):
    """A real agent CLI behind the Agent interface: the command backend plus a preset.

    The preset's parser runs twice over the same lines: live, to cut a session that will not
    end by itself, and in ``interpret`` for the verdict (no per-run state on the instance, so
    one agent can run many sessions at once).
    """

    def __init__(self, preset: CliPreset) -> None:
        super().__init__([preset.binary], name=preset.name)
        self.preset = preset

    def argv(self, request: SessionRequest, prompt_file: Path) -> list[str]:
        return self.preset.argv(find_cli(self.preset.binary), request)

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
            if self.preset.should_stop(live):
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
            return super().run(inner)

    def interpret(self, proc: ProcessResult, request: SessionRequest) -> SessionResult:
        tally = Tally()
        for line in proc.lines:
            self.preset.parse(line, tally)
        outer = request.cancel.outer if isinstance(request.cancel, _EitherCancel) else None
        if outer is not None and outer.is_set():
            outcome, reason = Outcome.CANCELLED, "cancelled"
        elif proc.cancelled:  # we cut it: the tally says why
            outcome, reason = Outcome.FAILED, tally.error or f"{self.name} stopped"
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
        )


# --- OpenCode ---------------------------------------------------------------------------------


def opencode_config(settings: AgentSettings, model: str | None) -> dict[str, Any]:
    """Config merged over the user's (or alone, with our provider): headless, all tools allowed.

    A permission "ask" would auto-reject in ``run`` and hang a served session, so allow.
    """
    config: dict[str, Any] = {
        "permission": {"*": "allow"},
        "share": "disabled",
        "autoupdate": False,
    }
    if settings.base_url:
        key = settings.api_key() or "unused"
        model = model or "default"
        config["provider"] = {
            "tgflow": {
                "npm": "@ai-sdk/openai-compatible",
                "options": {"baseURL": settings.base_url, "apiKey": key},
                "models": {
                    model: {"tool_call": True, "limit": {"context": 128000, "output": 8192}}
                },
            }
        }
        config["model"] = config["small_model"] = f"tgflow/{model}"
    elif model:
        config["model"] = model
    return config


def opencode_env(settings: AgentSettings, model: str | None, home: Path) -> dict[str, str]:
    env = {"OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(settings, model))}
    if settings.base_url:
        env.update(isolated_home(home))
    return env


STREAM_ERROR = re.compile(r'message="stream error".*?error\.error="((?:[^"\\]|\\.)*)"')


class OpenCodeRun(CliPreset):
    """``opencode run --format json``: JSONL of step_start/tool_use/text/step_finish/error."""

    name = "opencode"
    binary = "opencode"

    def argv(self, exe: str, request: SessionRequest) -> list[str]:
        # --print-logs puts provider "stream error" lines on stderr: the only trace of retries.
        argv = [exe, "run", "--format", "json", "--print-logs", "--log-level", "WARN"]
        argv += ["--dir", str(request.worktree)]
        return [*argv, request.prompt]

    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        # OpenCode takes its project from $PWD, not the process cwd.
        env = opencode_env(self.settings, request.model or self.settings.model, home)
        return {**env, "PWD": str(request.worktree)}

    def parse(self, line: str, tally: Tally) -> None:
        event = parse_json(line)
        if event is None:
            if m := STREAM_ERROR.search(line):
                tally.provider_retries += 1
                message = m.group(1).replace('\\"', '"')
                tally.error = f"provider error, retried {tally.provider_retries}x: {message}"
            return
        part = event.get("part") or {}
        kind = event.get("type")
        if kind == "step_finish":
            tokens = part.get("tokens") or {}
            tally.add_usage(tokens.get("input"), tokens.get("output"), part.get("cost"))
            tally.finished = part.get("reason") == "stop"
            tally.error = None  # the provider answered after all
        elif kind == "tool_use" and (part.get("state") or {}).get("status") == "error":
            tally.tool_errors += 1
        elif kind == "error":
            tally.error = error_text(event.get("error"))


# --- Claude Code ------------------------------------------------------------------------------


class ClaudeCode(CliPreset):
    """``claude -p --output-format stream-json``: ends with a ``result`` line."""

    name = "claude"
    binary = "claude"
    tools = "Bash Edit Write Read Glob Grep"

    def argv(self, exe: str, request: SessionRequest) -> list[str]:
        argv = [exe, "-p", request.prompt, "--output-format", "stream-json", "--verbose"]
        argv += ["--allowedTools", self.tools]  # as root, skip-permissions is refused
        model = request.model or self.settings.model
        return [*argv, "--model", model] if model else argv

    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        env = {"CLAUDE_CODE_MAX_RETRIES": "0"}  # fail fast; the node retries
        if self.settings.base_url:
            env.update(isolated_home(home))
            env["ANTHROPIC_BASE_URL"] = self.settings.base_url
            env["ANTHROPIC_API_KEY"] = self.settings.api_key() or "unused"
        return env

    def parse(self, line: str, tally: Tally) -> None:
        event = parse_json(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "user":
            content = (event.get("message") or {}).get("content")
            if isinstance(content, list):
                tally.tool_errors += sum(
                    1 for c in content if isinstance(c, dict) and c.get("is_error") is True
                )
        elif kind == "result":
            usage = event.get("usage") or {}
            tally.add_usage(
                usage.get("input_tokens"), usage.get("output_tokens"), event.get("total_cost_usd")
            )
            ok = event.get("subtype") == "success" and not event.get("is_error")
            tally.finished = ok
            if not ok:
                tally.error = f"claude: {event.get('result') or event.get('subtype')}"
            tally.denied = [
                str(d.get("tool_name", d)) if isinstance(d, dict) else str(d)
                for d in event.get("permission_denials") or []
            ]


# --- Codex ------------------------------------------------------------------------------------


class Codex(CliPreset):
    """``codex exec --json``: JSONL of thread/turn/item events."""

    name = "codex"
    binary = "codex"

    def argv(self, exe: str, request: SessionRequest) -> list[str]:
        # workspace-write makes .git read-only: the agent could not commit. The worktree is
        # ours and disposable, so run unsandboxed, never asking.
        argv = [exe, "exec", "--json", "--skip-git-repo-check", "-C", str(request.worktree)]
        argv += ["-s", "danger-full-access", "-c", 'approval_policy="never"']
        model = request.model or self.settings.model
        return [*argv, "-m", model, request.prompt] if model else [*argv, request.prompt]

    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        if not self.settings.base_url:
            return {}
        idle_ms = int((self.settings.idle_timeout_s or request.idle_timeout_s) * 2000)
        key_env = self.settings.api_key_env or "TGFLOW_CODEX_KEY"
        (home / "config.toml").write_text(
            f"model = {json.dumps(self.settings.model or 'default')}\n"
            'model_provider = "tgflow"\n'
            "[model_providers.tgflow]\n"
            'name = "tgflow"\n'
            f"base_url = {json.dumps(self.settings.base_url)}\n"
            f"env_key = {json.dumps(key_env)}\n"
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n"
            # Ours (the idle timeout) decides a stall; Codex's own guard is a backstop.
            f"stream_idle_timeout_ms = {idle_ms}\n"
        )
        env = {**isolated_home(home), "CODEX_HOME": str(home)}
        if self.settings.api_key_env is None:
            env[key_env] = "unused"
        return env

    def parse(self, line: str, tally: Tally) -> None:
        event = parse_json(line)
        if event is None:
            return
        kind = event.get("type")
        item = event.get("item") or {}
        if kind == "item.completed" and item.get("type") == "command_execution":
            if item.get("exit_code") not in (0, None):
                tally.tool_errors += 1
        elif kind == "turn.completed":
            usage = event.get("usage") or {}
            tally.add_usage(usage.get("input_tokens"), usage.get("output_tokens"))
            tally.finished, tally.error = True, None
        elif kind == "turn.failed":
            tally.error = f"codex: {error_text(event.get('error'))}"
        elif kind == "error":
            tally.error = f"codex: {error_text(event.get('message') or event)}"


# --- aider ------------------------------------------------------------------------------------

AIDER_ERROR = re.compile(r"(litellm\.\w+Error: .*|The API provider is not able to authenticate.*)")
AIDER_RETRY = re.compile(r"^Retrying in [\d.]+ seconds")
AIDER_TOKENS = re.compile(
    r"^Tokens: ([\d.]+)(k?) sent.*?([\d.]+)(k?) received\.(?: Cost: \$([\d.]+) message)?"
)


def _count(number: str, k: str) -> int:
    return round(float(number) * (1000 if k else 1))


class Aider(CliPreset):
    """aider prints text only and exits 0 even on auth errors: read its lines."""

    name = "aider"
    binary = "aider"

    def argv(self, exe: str, request: SessionRequest) -> list[str]:
        model = request.model or self.settings.model
        argv = [exe, "--edit-format", "whole", "--yes-always", "--no-stream", "--no-pretty"]
        argv += ["--no-check-update", "--no-show-release-notes", "--analytics-disable"]
        if model:
            argv += ["--model", f"openai/{model}" if self.settings.base_url else model]
        return [*argv, "--message", request.prompt]

    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        if not self.settings.base_url:
            return {}
        return {
            **isolated_home(home),
            "OPENAI_API_BASE": self.settings.base_url,
            "OPENAI_API_KEY": self.settings.api_key() or "unused",
        }

    def parse(self, line: str, tally: Tally) -> None:
        if m := AIDER_ERROR.search(line):
            tally.error = f"aider: {m.group(1)}"
            tally.finished = False
        elif AIDER_RETRY.match(line):
            tally.provider_retries += 1
        elif m := AIDER_TOKENS.match(line):
            cost = float(m.group(5)) if m.group(5) else None
            tally.add_usage(_count(m.group(1), m.group(2)), _count(m.group(3), m.group(4)), cost)
            tally.finished, tally.error = True, None


PRESET_CLASSES: dict[str, type[CliPreset]] = {
    cls.name: cls for cls in (OpenCodeRun, ClaudeCode, Codex, Aider)
}
