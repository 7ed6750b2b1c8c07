"""Usage limits: a provider that refuses for its rate or usage limit pauses the run's
sessions on it, instead of failing every node that asks it meanwhile.

A session that meets a limit is ended (the CLI would hold it, retrying into the limit); the
``UsageGate`` then keeps every node of the run from starting a session on that provider until
the reset the provider said, or, when it said none, a backoff that doubles with each limit
in a row (``usage_limit_backoff_s``, 2x, 4x, ..., capped by ``usage_limit_max_wait_s``). The
node waits on its kept branch and worktree, and its next session goes on with the work.
Waiting is on the node's cancel event, so cancelling a run ends its waits at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tasks_lib.agents.limits import UsageLimit


@dataclass(frozen=True)
class Pause:
    """No session on ``provider`` before ``until``; ``said``: the provider said so (else it is
    tgflow's backoff)."""

    provider: str
    until: datetime
    said: bool

    def remaining_s(self, now: datetime | None = None) -> float:
        return max(0.0, (self.until - (now or datetime.now(UTC))).total_seconds())

    def __str__(self) -> str:
        why = "reset said by the provider" if self.said else "no reset said: tgflow's backoff"
        return f"usage limit of {self.provider}: waiting until {self.until:%H:%M:%S} UTC ({why})"


class UsageGate:
    """The run's pauses, one per provider; nodes tell it of limits and wait on it from their
    own threads, hence the lock."""

    def __init__(self, backoff_s: float = 60.0, cap_s: float = 3600.0) -> None:
        self.backoff_s, self.cap_s = backoff_s, cap_s
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._strikes: dict[str, int] = {}  # limits in a row without a reset said

    def hit(self, limit: UsageLimit, now: datetime | None = None) -> Pause:
        """A session met ``limit``: the provider's pause, from its reset or the backoff (a
        reset already past is no reset: sessions would only meet the limit again)."""
        now = now or datetime.now(UTC)
        with self._lock:
            if limit.reset_at is not None and limit.reset_at > now:
                pause = Pause(limit.provider, limit.reset_at, said=True)
            else:
                strikes = self._strikes.get(limit.provider, 0) + 1
                self._strikes[limit.provider] = strikes
                wait = min(self.backoff_s * 2 ** (strikes - 1), self.cap_s)
                pause = Pause(limit.provider, now + timedelta(seconds=wait), said=False)
            earlier = self._pauses.get(limit.provider)
            if earlier is None or earlier.until < pause.until:  # another node's may be longer
                self._pauses[limit.provider] = pause
            return self._pauses[limit.provider]

    def passed(self, provider: str) -> None:
        """A session on ``provider`` went through: the next limit backs off from the start."""
        with self._lock:
            self._strikes.pop(provider, None)

    def pause(self, provider: str, now: datetime | None = None) -> Pause | None:
        """The pause a session on ``provider`` must wait out now, or None."""
        now = now or datetime.now(UTC)
        with self._lock:
            pause = self._pauses.get(provider)
            if pause is not None and pause.until <= now:
                del self._pauses[provider]
                return None
            return pause
