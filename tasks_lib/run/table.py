"""The nodes table: one row per node, shared by the run's table artifact, the terminal's
final table and ``tgflow run --json``, so all show the same numbers."""

from __future__ import annotations

from typing import Any

from tasks_lib.run.records import NodeRecord


def node_table(records: list[NodeRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        files = sorted({f for c in r.conflicts for f in c.files})
        rows.append(
            {
                "task": r.task_id,
                "status": "already done" if r.already_done else r.status.value,
                "attempts": len(r.attempts),
                "duration_s": round(r.duration_s, 1) if r.attempts else 0.0,
                "agent_s": round(r.agent_seconds, 1),
                "validate_s": round(r.validate_seconds, 1),
                "sessions": r.sessions,
                "conflicts": ", ".join(files),
                "cost_usd": r.cost_usd,
                "tokens": (r.tokens_in or 0) + (r.tokens_out or 0) if r.tokens_in else None,
                "budget": str(r.budget) if r.budget else None,
                "log": r.log_path,
                "reason": r.reason.strip().splitlines()[0] if r.reason.strip() else "",
            }
        )
    return rows
