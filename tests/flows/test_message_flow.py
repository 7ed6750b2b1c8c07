"""The message flow a person runs from the UI's form (``flows/message_flow``) names the run it
talks to, and says in one line why not when it cannot: no such run, a name several running
runs share, a run that has ended or is not tgflow's, a run that does not answer.

Against the real Prefect server, with flow runs of the real ``tgflow`` flow that no process
runs (what a run whose nodes do not listen looks like from outside). The message reaching a
node, and a refusal, are in ``test_node_messages.py`` and ``tests/ui/test_ui_talk.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest

pytestmark = pytest.mark.prefect

Make = Callable[..., Any]


@pytest.fixture
def make_run(prefect_server: str) -> Iterator[Make]:
    """Flow runs made by hand, ended (Cancelled) afterwards: a Running tgflow run left over
    would be taken for the run of the tests that follow."""
    from prefect import get_client
    from prefect.states import Cancelled, Running

    from flows.graph_flow import tgflow_run

    made: list[Any] = []

    def make(name: str, state: Any = None, of: Any = tgflow_run) -> Any:
        with get_client(sync_client=True) as client:
            made.append(client.create_flow_run(of, name=name, state=state or Running()))
        return made[-1]

    yield make
    with get_client(sync_client=True) as client:
        for run in made:
            client.set_flow_run_state(run.id, Cancelled(), force=True)


def refusal(run: str) -> str:
    from flows.message_flow import NoSuchRun, find_run

    with pytest.raises(NoSuchRun) as refused:
        find_run(run)
    return str(refused.value)


def test_a_name_shown_in_the_ui_finds_the_one_running_run_of_that_name(make_run: Make) -> None:
    from prefect.states import Completed

    from flows.message_flow import find_run

    name = f"gentle-otter-{uuid4().hex[:6]}"
    make_run(name, Completed())  # an earlier run of that name, ended
    running = make_run(name)

    assert find_run(f" {name} ").id == running.id  # pasted with a space or two
    assert find_run(str(running.id)).id == running.id


def test_a_name_no_run_has_or_several_running_runs_share_is_refused_in_one_line(
    make_run: Make,
) -> None:
    twin = f"twin-{uuid4().hex[:6]}"
    first, second = make_run(twin), make_run(twin)

    assert refusal("nobody-here") == (
        "no tgflow run is named 'nobody-here': give the name its page shows (Runs → the tgflow "
        "run), or its flow-run id"
    )
    several = refusal(twin)
    assert several.startswith(f"2 running tgflow runs are named '{twin}' (")
    assert str(first.id) in several and str(second.id) in several
    assert several.endswith(
        "give the flow-run id of the one you mean (the last part of its page's address)"
    )


def test_a_run_that_ended_or_is_not_tgflows_is_refused_saying_so(make_run: Make) -> None:
    from prefect.states import Completed

    from flows.graph_flow import tgflow_run

    ended = make_run(f"done-{uuid4().hex[:6]}", Completed())
    approval = make_run("approve x", of=tgflow_run.with_options(name="tgflow-approval"))
    unknown = uuid4()

    said = "only a running run's nodes take messages"
    assert refusal(ended.name) == f"the tgflow run '{ended.name}' is Completed: {said}"
    assert refusal(str(ended.id)) == f"the tgflow run {ended.name} is Completed: {said}"
    assert refusal(str(approval.id)).startswith(
        f"flow run approve x ({approval.id}) is a run of tgflow-approval, not of tgflow"
    )
    assert refusal(str(unknown)) == f"no flow run has the id {unknown}"


def test_a_run_whose_nodes_do_not_listen_leaves_the_message_unanswered_and_the_flow_failed(
    make_run: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.input import filter_flow_run_input

    from flows import message_flow
    from flows.node_messages import KEY_PREFIX

    monkeypatch.setattr(message_flow, "REPLY_WAIT_S", 1.5)
    run = make_run(f"setting-up-{uuid4().hex[:6]}")  # Running, but no listener reads it
    began = time.monotonic()

    state = message_flow.tgflow_node_message(
        run=run.name, task_id=" a ", text="hi", return_state=True
    )

    assert 1.5 <= time.monotonic() - began < 20
    assert state.is_failed()
    assert state.message == (
        f"the run {run.name} did not answer within 1.5 s: it reads messages only while its "
        "nodes run (not while it sets up or writes its review); see its log"
    )
    [sent] = filter_flow_run_input(key_prefix=KEY_PREFIX, flow_run_id=run.id)
    assert sent.decoded_value == {"task_id": "a", "text": "hi", "cancel": False}


def test_the_flow_ends_failed_with_the_refusal_as_its_message(prefect_server: str) -> None:
    from flows.message_flow import tgflow_node_message

    state = tgflow_node_message(run="nobody-here", task_id="a", text="hi", return_state=True)

    assert state.is_failed()
    assert state.message.startswith("no tgflow run is named 'nobody-here'")
