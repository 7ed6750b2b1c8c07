"""Flows named like the graph flow ("tgflow") that do one thing the notifications listen for,
run as ``python standin_flows.py CASE ...`` in a process of their own against the server in
PREFECT_API_URL:

- ``blocked TASK_ID REASON``: a node record that came in blocked, told as the graph flow
  tells it (``flows.notifications.node_finished``);
- ``approval``: the run pauses for a person's approval, until it is resumed (or 10 minutes
  pass).
"""

from __future__ import annotations

import sys

from prefect import flow
from prefect.flow_runs import pause_flow_run

from deployments.definitions import FLOW_NAME
from flows.notifications import node_finished
from tasks_lib.run.records import NodeRecord, NodeStatus


@flow(name=FLOW_NAME)
def blocked_node(task_id: str, reason: str) -> None:
    sent = node_finished(NodeRecord(task_id=task_id, status=NodeStatus.BLOCKED, reason=reason))
    assert sent is not None, "no event was sent"


@flow(name=FLOW_NAME)
def waiting_approval() -> None:
    pause_flow_run(timeout=600)


if __name__ == "__main__":
    case, *args = sys.argv[1:]
    if case == "blocked":
        blocked_node(*args)
    else:
        waiting_approval()
