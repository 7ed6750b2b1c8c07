"""Codex: ``codex exec --json``, with a generated config when we give it a provider."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tasks_lib.agents.base import SessionRequest
from tasks_lib.agents.cli import CliPreset, base_dirs, error_text, isolated_home, parse_json
from tasks_lib.agents.tally import Tally


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
        codex_home = home / ".codex"  # not HOME itself: a sandbox keeps HOME read-only
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(
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
        env = {**isolated_home(home), "CODEX_HOME": str(codex_home)}
        if self.settings.api_key_env is None:
            env[key_env] = "unused"
        return env

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """``CODEX_HOME`` (default ``~/.codex``): sessions, logs, its own temp files."""
        return [Path(env.get("CODEX_HOME") or base_dirs(env)["HOME"] / ".codex")]

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
            said = error_text(event.get("error"))
            tally.provider_error(said, f"codex: {said}")
        elif kind == "error":
            said = error_text(event.get("message") or event)
            tally.provider_error(said, f"codex: {said}")
