"""The run's pauses for providers' usage limits: the provider's reset when it says one, else a
backoff that doubles with each limit in a row, capped; other providers never wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks_lib.agents.limits import UsageLimit
from tasks_lib.run.usage import UsageGate

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
P = "https://api.example/v1"


def limit(reset_in_s: float | None = None) -> UsageLimit:
    reset = None if reset_in_s is None else NOW + timedelta(seconds=reset_in_s)
    return UsageLimit("usage limit reached", reset, provider=P)


def test_the_reset_the_provider_said_is_the_pause():
    gate = UsageGate(backoff_s=60)
    pause = gate.hit(limit(20), NOW)
    assert (pause.until, pause.said) == (NOW + timedelta(seconds=20), True)
    assert gate.pause(P, NOW) == pause
    assert (
        str(pause) == f"usage limit of {P}: waiting until 12:00:20 UTC (reset said by the provider)"
    )


def test_without_a_reset_the_backoff_doubles_up_to_its_cap_and_a_session_through_resets_it():
    gate = UsageGate(backoff_s=60, cap_s=200)
    waits = [(gate.hit(limit(), NOW).until - NOW).total_seconds() for _ in range(3)]
    assert waits == [60, 120, 200]
    gate.passed(P)
    assert gate.hit(limit(), NOW + timedelta(seconds=300)).until == NOW + timedelta(seconds=360)


def test_a_reset_already_past_is_backed_off_from():
    pause = UsageGate(backoff_s=60).hit(limit(-5), NOW)
    assert (pause.until, pause.said) == (NOW + timedelta(seconds=60), False)


def test_the_longer_of_two_nodes_pauses_holds_and_ends_at_its_time():
    gate = UsageGate()
    gate.hit(limit(300), NOW)
    assert gate.hit(limit(20), NOW).until == NOW + timedelta(seconds=300)
    assert gate.pause(P, NOW + timedelta(seconds=299)) is not None
    assert gate.pause(P, NOW + timedelta(seconds=300)) is None


def test_another_provider_is_not_paused():
    gate = UsageGate()
    gate.hit(limit(300), NOW)
    assert gate.pause("claude", NOW) is None
