"""Claude Code: ``claude -p`` streaming JSON, pointed at our provider when one is given."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks_lib.agents.base import SessionRequest
from tasks_lib.agents.cli import CliPreset, base_dirs, isolated_home, parse_json
from tasks_lib.agents.tally import Tally


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
            # Its .claude.json too, which otherwise sits in HOME, read-only in a sandbox.
            env["CLAUDE_CONFIG_DIR"] = str(home / ".claude")
            env["ANTHROPIC_BASE_URL"] = self.settings.base_url
            env["ANTHROPIC_API_KEY"] = self.settings.api_key() or "unused"
        return env

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """``CLAUDE_CONFIG_DIR`` (default ``~/.claude``): sessions, settings, shell snapshots,
        and with the variable set ``.claude.json`` too. Without it (the user's own login)
        ``~/.claude.json`` stays read-only: Claude Code runs, not saving it."""
        return [Path(env.get("CLAUDE_CONFIG_DIR") or base_dirs(env)["HOME"] / ".claude")]

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
                said = str(event.get("result") or event.get("subtype"))
                tally.provider_error(said, f"claude: {said}")
            tally.denied = [
                str(d.get("tool_name", d)) if isinstance(d, dict) else str(d)
                for d in event.get("permission_denials") or []
            ]
