"""A CLI session's tokens and verdict come from every line it printed, not only the tail the
process keeps in memory (a long real session prints thousands of JSON events)."""

from __future__ import annotations

import sys
from pathlib import Path

from tasks_lib.agents.base import Outcome, SessionRequest
from tasks_lib.agents.cli import CliAgent, CliPreset, parse_json
from tasks_lib.agents.process import KEPT_LINES
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.agents.tally import Tally

EVENTS = KEPT_LINES + 500


class ChattyCli(CliPreset):
    """A stand-in CLI (Python itself): one usage event per line, a "done" event at the end."""

    name = "chatty"
    binary = Path(sys.executable).name

    def argv(self, exe: str, request: SessionRequest) -> list[str]:
        code = (
            "import json\n"
            f"for i in range({EVENTS}):\n"
            "    print(json.dumps({'type': 'usage', 'in': 1, 'out': 2}))\n"
            "print(json.dumps({'type': 'done'}))\n"
        )
        return [sys.executable, "-c", code]

    def env(self, request: SessionRequest, home: Path) -> dict[str, str]:
        return {}

    def parse(self, line: str, tally: Tally) -> None:
        event = parse_json(line)
        if event is None:
            return
        if event["type"] == "usage":
            tally.add_usage(event["in"], event["out"])
        elif event["type"] == "done":
            tally.finished = True


def test_tokens_are_counted_over_every_line_of_a_long_session(tmp_path: Path) -> None:
    agent = CliAgent(ChattyCli(AgentSettings(preset="command", command=["x"])))
    result = agent.run(SessionRequest(task_id="t", worktree=tmp_path, prompt="go", timeout_s=60))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert len(result.log) <= KEPT_LINES  # the process kept only the tail
    assert (result.tokens_in, result.tokens_out) == (EVENTS, 2 * EVENTS)
