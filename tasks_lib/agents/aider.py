"""aider: plain text output only, so its verdict is read from known lines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from tasks_lib.agents.base import SessionRequest
from tasks_lib.agents.cli import CliPreset, base_dirs, isolated_home
from tasks_lib.agents.tally import Tally

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

    def state_dirs(self, env: Mapping[str, str]) -> list[Path]:
        """``~/.aider`` (analytics, caches, install records); its chat history and tags cache
        go in the repository, the checkout."""
        return [base_dirs(env)["HOME"] / ".aider"]

    def parse(self, line: str, tally: Tally) -> None:
        if m := AIDER_ERROR.search(line):
            tally.provider_error(m.group(1), f"aider: {m.group(1)}")
            tally.finished = False
        elif AIDER_RETRY.match(line):
            tally.provider_retries += 1
        elif m := AIDER_TOKENS.match(line):
            cost = float(m.group(5)) if m.group(5) else None
            tally.add_usage(_count(m.group(1), m.group(2)), _count(m.group(3), m.group(4)), cost)
            tally.finished, tally.error = True, None
