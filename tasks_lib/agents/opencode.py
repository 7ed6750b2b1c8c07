"""OpenCode: the ``opencode run`` preset, and the config and environment that the served
backend (``opencode_server.py``) starts ``opencode serve`` with as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks_lib.agents.base import SessionRequest
from tasks_lib.agents.cli import CliPreset, base_dirs, error_text, isolated_home, parse_json
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.agents.tally import Tally


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


def opencode_state_dirs(env: Mapping[str, str]) -> list[Path]:
    """Its config, data (sessions, the SQLite store), cache and state dirs: XDG, one each."""
    dirs = base_dirs(env)
    kinds = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
    return [dirs[kind] / "opencode" for kind in kinds]


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

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        return opencode_state_dirs(env)

    def parse(self, line: str, tally: Tally) -> None:
        event = parse_json(line)
        if event is None:
            if m := STREAM_ERROR.search(line):
                tally.provider_retries += 1
                message = m.group(1).replace('\\"', '"')
                shown = f"provider error, retried {tally.provider_retries}x: {message}"
                tally.provider_error(message, shown)
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
            tally.provider_error(error_text(event.get("error")))
