"""A provider's rate or usage limit, read from what an agent CLI prints about it.

No CLI reports a limit in a field of its own: OpenCode logs the provider's message as a
"stream error" (and waits for the reset itself, holding the session), Claude Code ends with a
result such as ``Claude AI usage limit reached|1755615600`` or ``API Error: Request rejected
(429) · <the provider's message>``, Codex with "You've hit your usage limit. Try again at 7:11
AM." (the machine's local time) or "... try again in 2 hours". So the limit and its reset are
read from the message text, the one thing they all carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

LIMITED = re.compile(r"usage.?limit|rate.?limit|hit your limit|too many requests|\b429\b", re.I)
# Also answered with 429, but no reset ends them: a person must pay (OpenAI's
# insufficient_quota, Anthropic's credit balance). Waiting would only delay the failure.
BILLING = re.compile(r"insufficient.quota|billing|credit balance", re.I)
_EPOCH = re.compile(r"(?:\||resets?(?:_at)?\W{1,4}(?:at\s+)?)(\d{10})\b", re.I)
_ISO = re.compile(r"resets?(?:_at)?\W{1,4}(?:at\s+)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?)")
_AFTER = re.compile(
    r"(?:try again|retry|resets?) in\s+((?:\d+(?:\.\d+)?\s*[a-z]+[\s,]*(?:and\s+)?)+)", re.I
)
_CLOCK = re.compile(
    r"try again at (\d{1,2}):(\d\d)\s*([AP]M)?", re.I
)  # Codex: local, to the minute
_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)", re.I)
_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


@dataclass(frozen=True)
class UsageLimit:
    """The provider refused for its limit; ``reset_at`` when it said when that ends."""

    message: str
    reset_at: datetime | None = None
    provider: str = ""  # filled in by the backend, which knows whom it talks to


def _unit_seconds(unit: str) -> float | None:
    unit = unit.lower()
    if unit in _SECONDS:
        return _SECONDS[unit]
    for word, seconds in (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)):
        if unit.startswith(word):
            return seconds
    return None


def reset_time(message: str, now: datetime | None = None) -> datetime | None:
    """When the limit ends, as the message says: an epoch or ISO time, or "try again in 6s" /
    "in 2 hours 5 minutes" counted from ``now``; None when it does not say."""
    if m := _EPOCH.search(message):
        return datetime.fromtimestamp(int(m.group(1)), UTC)
    if m := _ISO.search(message):
        return datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).astimezone(UTC)
    if m := _CLOCK.search(message):
        return _next_clock(int(m.group(1)), int(m.group(2)), m.group(3), now)
    if m := _AFTER.search(message):
        total = 0.0
        for number, unit in _UNIT.findall(m.group(1)):
            seconds = _unit_seconds(unit)
            if seconds is None:
                break
            total += float(number) * seconds
        if total > 0:
            return (now or datetime.now(UTC)) + timedelta(seconds=total)
    return None


def _next_clock(hour: int, minute: int, half: str | None, now: datetime | None) -> datetime:
    """The next moment past ``now`` that the machine's clock shows ``hour:minute`` (AM/PM)
    plus a minute: the reset lies somewhere in that minute, and a gate opened at its start
    would only meet the limit again."""
    if half is not None:
        hour = hour % 12 + (12 if half.upper() == "PM" else 0)
    local = (now or datetime.now(UTC)).astimezone()
    reset = local.replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(minutes=1)
    if reset <= local:
        reset += timedelta(days=1)
    return reset.astimezone(UTC)


def usage_limit(message: str, now: datetime | None = None) -> UsageLimit | None:
    """The limit a provider's message reports, or None when it is some other error."""
    if not LIMITED.search(message) or BILLING.search(message):
        return None
    return UsageLimit(message.strip(), reset_time(message, now))
