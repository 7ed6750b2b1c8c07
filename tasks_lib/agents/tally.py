"""What a session's event stream told us, and the verdict drawn from it, not from exit codes.

Real CLIs exit 0 with denied tools (Claude Code), after auth errors (aider) or never at all
(OpenCode retries provider errors for ever), so every backend keeps a tally of the events it
saw and judges from that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks_lib.agents.base import Outcome
from tasks_lib.agents.limits import UsageLimit, usage_limit

TOOL_ERROR_ANOMALY = 5  # more tool errors than this in one session is worth a look


@dataclass
class Tally:
    finished: bool = False  # the agent ended its turn cleanly (its own "done" event)
    error: str | None = None  # the agent's or provider's own message
    denied: list[str] = field(default_factory=list)  # tools a permission rule refused
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_errors: int = 0
    provider_retries: int = 0
    cut: str | None = None  # why tgflow stopped the session (its budget), not the agent
    limit: UsageLimit | None = None  # the provider's rate or usage limit: wait, do not fail

    def provider_error(self, message: str, shown: str | None = None) -> None:
        """The provider's (or the CLI's) error ``message``, which may be a usage limit; the
        session's error reads ``shown`` (the message by default)."""
        self.limit = self.limit or usage_limit(message)
        self.error = shown or message

    def spent(self) -> tuple[int, float]:
        """Tokens in + out and dollars so far (unreported counts as none spent)."""
        return (self.tokens_in or 0) + (self.tokens_out or 0), self.cost_usd or 0.0

    def add_usage(
        self, tokens_in: int | None, tokens_out: int | None, cost: float | None = None
    ) -> None:
        if tokens_in is not None:
            self.tokens_in = (self.tokens_in or 0) + int(tokens_in)
        if tokens_out is not None:
            self.tokens_out = (self.tokens_out or 0) + int(tokens_out)
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + float(cost)

    def verdict(self, agent: str) -> tuple[Outcome, str]:
        """The outcome of a session that ended on its own (no timeout, stall or cancel)."""
        if self.denied:  # the root cause of whatever error followed
            return Outcome.FAILED, f"{agent}: permission denied for {', '.join(self.denied)}"
        if self.error:
            return Outcome.FAILED, self.error
        if not self.finished:
            return Outcome.FAILED, f"{agent} ended without finishing its turn"
        return Outcome.SUCCEEDED, ""

    def anomaly(self) -> str | None:
        if self.tool_errors > TOOL_ERROR_ANOMALY:
            return f"anomaly: {self.tool_errors} tool errors in one session"
        return None
