"""``perdura signal``, ``query``, ``cancel``, ``terminate``, ``recover``, ``reset`` and
``fork`` against a real SQLite store, each checked by what the run then does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cli_app
import pytest
from cli_support import APP, APP_DIR, Cli

from engine import Client, WorkflowHandle
from history import ActivityCompleted, WorkflowStarted, WorkflowTerminated
from sdk import WorkflowCancelledError, WorkflowFailureError

WAIT = 10.0


async def _waiting_approval(client: Client, workflow_id: str) -> WorkflowHandle:
    """An Approval run that finished its first step and now waits for its signal."""
    handle = await client.start_workflow(cli_app.Approval, "doc", id=workflow_id)
    async with asyncio.timeout(WAIT):
        while not any(isinstance(e, ActivityCompleted) for e in await handle.history()):
            await client.store.wait_for_run(handle.run_id or "", 0.05)
    return handle


async def _result(client: Client, workflow_id: str) -> Any:
    async with asyncio.timeout(WAIT):
        return await client.get_handle(workflow_id).result()


def _failed_pipeline(cli: Cli, workflow_id: str) -> None:
    """A pipeline run whose ``transform`` step failed for good; the step is fixed after."""
    cli_app.broken.add("p:transform")

    async def run(client: Client) -> None:
        handle = await client.start_workflow(cli_app.pipeline, "p", id=workflow_id)
        with pytest.raises(WorkflowFailureError):
            async with asyncio.timeout(WAIT):
                await handle.result()

    cli.run(run)
    cli_app.broken.clear()


def _completed_pipeline(cli: Cli, workflow_id: str) -> None:
    async def run(client: Client) -> None:
        await (await client.start_workflow(cli_app.pipeline, "p", id=workflow_id)).result()

    cli.run(run)


# -- signal --------------------------------------------------------------------------------


def test_signal_is_recorded_and_the_waiting_run_completes_with_its_argument(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("signal", "doc-1", "approve", "--arg", '"ann"')
    assert done.code == 0, done.err
    assert done.out.startswith("signal 'approve' recorded in workflow 'doc-1' (run ")
    assert cli.run(lambda client: _result(client, "doc-1")) == "doc approved by ann"


def test_signal_json_names_the_run_that_received_it(cli: Cli) -> None:
    handle = cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("signal", "doc-1", "approve", "--arg", '"ann"', "--json")
    assert done.code == 0
    assert done.json() == {
        "workflow_id": "doc-1",
        "run_id": handle.run_id,
        "status": "running",
        "action": "signal",
        "signal": "approve",
        "args": ["ann"],
    }


def test_signal_to_a_closed_run_is_a_one_line_error(cli: Cli) -> None:
    cli.run(lambda client: client.execute_workflow(cli_app.hello, "ada", id="hello-1"))
    done = cli("signal", "hello-1", "approve", "--arg", '"ann"')
    assert (done.code, done.out) == (1, "")
    assert "is already closed (completed)" in done.error_line()


def test_signal_with_an_argument_that_is_not_json_is_a_usage_error(cli: Cli) -> None:
    done = cli("signal", "doc-1", "approve", "--arg", "ann")
    assert done.code == 2
    assert "'ann' is not JSON" in done.err


# -- query ---------------------------------------------------------------------------------


def test_query_answers_from_the_replayed_state_as_json(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("query", "doc-1", "status", "--arg", '"now: "', *APP)
    assert (done.code, done.out, done.err) == (0, '"now: waiting"\n', "")


def test_query_json_wraps_the_answer_with_the_run(cli: Cli) -> None:
    handle = cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("query", handle.run_id or "", "status", *APP, "--json")
    assert done.json() == {
        "workflow_id": "doc-1",
        "run_id": handle.run_id,
        "query": "status",
        "result": "waiting",
    }


def test_query_writes_nothing_to_the_history(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    before = cli("history", "doc-1", "--json").json()
    assert cli("query", "doc-1", "status", *APP).code == 0
    assert cli("history", "doc-1", "--json").json() == before


def test_an_unknown_query_is_a_one_line_error_listing_the_known_ones(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("query", "doc-1", "progress", *APP)
    assert done.code == 1
    assert "has no query 'progress'; its queries: status" in done.error_line()


def test_query_needs_an_app_with_the_workflows_code(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    assert cli("query", "doc-1", "status").code == 2  # --app is required
    other = ["--app", "cli_changed_app:app", "--app-dir", str(APP_DIR)]
    done = cli("query", "doc-1", "status", *other)
    assert done.code == 1
    assert "cannot answer queries of workflow type 'Approval'" in done.error_line()


# -- cancel and terminate ------------------------------------------------------------------


def test_cancel_records_the_reason_and_the_run_ends_cancelled(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("cancel", "doc-1", "--reason", "withdrawn")
    assert done.code == 0, done.err
    assert "cancellation requested for workflow 'doc-1'" in done.out

    async def outcome(client: Client) -> str:
        with pytest.raises(WorkflowCancelledError) as caught:
            await _result(client, "doc-1")
        return str(caught.value)

    assert "withdrawn" in cli.run(outcome)
    assert cli("describe", "doc-1", "--json").json()["status"] == "cancelled"


def test_cancel_of_a_closed_run_is_a_one_line_error(cli: Cli) -> None:
    cli.run(lambda client: client.execute_workflow(cli_app.hello, "ada", id="hello-1"))
    done = cli("cancel", "hello-1")
    assert done.code == 1
    assert "already closed" in done.error_line()


def test_terminate_closes_the_run_at_once_without_a_worker(cli: Cli) -> None:
    cli.run(lambda client: _waiting_approval(client, "doc-1"))
    done = cli("terminate", "doc-1", "--reason", "stuck", "--json")
    assert done.code == 0, done.err
    assert (done.json()["action"], done.json()["status"]) == ("terminate", "terminated")
    last = cli("history", "doc-1", "--json").json()[-1]
    assert (last["type"], last["reason"]) == (WorkflowTerminated.__name__, "stuck")


@pytest.mark.parametrize("command", ["signal", "cancel", "terminate", "recover", "query"])
def test_steering_an_unknown_id_is_a_one_line_error(cli: Cli, command: str) -> None:
    cli.run(lambda client: client.execute_workflow(cli_app.hello, "ada", id="hello-1"))
    extra = {"signal": ["approve"], "query": ["status", *APP]}.get(command, [])
    done = cli(command, "no-such-run", *extra)
    assert (done.code, done.out) == (1, "")
    assert "no workflow or run with id 'no-such-run'" in done.error_line()


def test_steering_a_store_that_does_not_exist_is_an_error_and_creates_nothing(
    cli: Cli,
) -> None:
    done = cli("cancel", "doc-1")
    assert done.code == 1
    assert "does not exist" in done.error_line()
    assert not Path(cli.url.removeprefix("sqlite:///")).exists()


# -- recover -------------------------------------------------------------------------------


def test_recover_resumes_a_failed_run_before_its_failing_step(cli: Cli) -> None:
    _failed_pipeline(cli, "p-1")
    old = cli("describe", "p-1", "--json").json()
    done = cli("recover", "p-1", "--reason", "transform fixed", "--json")
    assert done.code == 0, done.err
    report = done.json()
    assert report["from_run_id"] == old["run_id"]
    assert report["run_id"] != old["run_id"]
    assert (report["rescheduled"], report["reason"]) == (False, "transform fixed")
    # Events 1..4: started, extract scheduled and completed, transform scheduled (the copy
    # leaves that unfinished step out, so it is scheduled afresh).
    assert report["from_event_id"] == 4

    result = cli.run(lambda client: _result(client, "p-1"))
    assert result == ["p:extract-done", "p:transform-done", "p:load-done"]
    # extract's recorded result was kept; transform ran again (once failed, once fixed).
    assert cli_app.steps == {"p:extract": 1, "p:transform": 2, "p:load": 1}


def test_recover_of_a_running_run_hands_it_to_the_next_worker(cli: Cli) -> None:
    handle = cli.run(lambda client: client.start_workflow(cli_app.napping, 3600.0, id="nap-1"))
    done = cli("recover", "nap-1")
    assert done.code == 0, done.err
    assert done.out.startswith(f"run {handle.run_id} of workflow 'nap-1' rescheduled")


def test_recover_of_a_completed_run_is_refused(cli: Cli) -> None:
    _completed_pipeline(cli, "p-1")
    done = cli("recover", "p-1")
    assert done.code == 1
    assert "only running or failed runs can be recovered" in done.error_line()


# -- reset and fork ------------------------------------------------------------------------


def test_reset_runs_the_steps_after_the_chosen_event_again(cli: Cli) -> None:
    _completed_pipeline(cli, "p-1")
    old = cli("describe", "p-1", "--json").json()["run_id"]
    done = cli("reset", "p-1", "--to", "3", "--reason", "redo transform")
    assert done.code == 0, done.err
    assert done.out.startswith("workflow 'p-1' reset to event 3: new run ")
    assert cli.run(lambda client: _result(client, "p-1"))[0] == "p:extract-done"
    assert cli_app.steps == {"p:extract": 1, "p:transform": 2, "p:load": 2}
    first = cli("history", "p-1", "--json").json()[0]
    assert first["type"] == WorkflowStarted.__name__
    assert first["origin"] == {
        "kind": "reset",
        "run_id": old,
        "event_id": 3,
        "reason": "redo transform",
        "copied": 2,  # events 2 and 3: extract scheduled and completed
        "failure_class": None,
    }


def test_reset_to_an_event_outside_the_history_is_a_one_line_error(cli: Cli) -> None:
    _completed_pipeline(cli, "p-1")
    done = cli("reset", "p-1", "--to", "99")
    assert done.code == 1
    assert "event id 99 is outside the run's history (events 1..8)" in done.error_line()


@pytest.mark.parametrize("event_id", ["0", "-1", "three"])
def test_reset_to_an_event_id_that_is_not_a_positive_integer_is_a_usage_error(
    cli: Cli, event_id: str
) -> None:
    done = cli("reset", "p-1", "--to", event_id)
    assert done.code == 2
    assert "usage: perdura reset" in done.err


def test_fork_starts_a_new_workflow_and_leaves_the_original_alone(cli: Cli) -> None:
    _completed_pipeline(cli, "p-1")
    before = cli("history", "p-1", "--json").json()
    done = cli("fork", "p-1", "--at", "3", "--new-id", "p-copy", "--json")
    assert done.code == 0, done.err
    assert (done.json()["workflow_id"], done.json()["at_event_id"]) == ("p-copy", 3)
    assert cli.run(lambda client: _result(client, "p-copy"))[0] == "p:extract-done"
    assert cli("history", "p-1", "--json").json() == before
    assert cli_app.steps["p:extract"] == 1


def test_fork_onto_a_workflow_id_that_is_running_is_refused(cli: Cli) -> None:
    _completed_pipeline(cli, "p-1")
    cli.run(lambda client: client.start_workflow(cli_app.napping, 3600.0, id="nap-1"))
    done = cli("fork", "p-1", "--at", "3", "--new-id", "nap-1")
    assert done.code == 1
    assert "'nap-1' is already running" in done.error_line()


def test_fork_with_an_empty_new_id_is_a_usage_error(cli: Cli) -> None:
    done = cli("fork", "p-1", "--at", "3", "--new-id", "")
    assert done.code == 2
    assert "--new-id must not be empty" in done.error_line()
