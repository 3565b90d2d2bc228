"""``perdura describe`` and ``perdura graph`` on graph runs: what a run is doing, drawn and
explained from its history alone, against a real SQLite store and real in-process workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import cli_graph_app
import pytest
from cli_support import Cli

import engine._instance
from engine import Client, WorkflowHandle, describe_graph_run
from sdk import open_client

T = TypeVar("T")
WAIT = 10.0


def with_worker(cli: Cli, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work(client)`` with a worker for the graphs on the test's store, then stop it."""
    return cli.run(work, cli_graph_app.app)


async def until(handle: WorkflowHandle, status: str, step: int | None = None) -> dict[str, Any]:
    """The run's description once it has ``status`` (and is at ``step``)."""
    async with asyncio.timeout(WAIT):
        while True:
            description = describe_graph_run(await handle.history())
            if description.get("status") == status and step in (None, description["step"]):
                return description
            await handle.client.store.wait_for_run(handle.run_id or "", 0.05)


async def waiting_review(client: Client, workflow_id: str = "r-1") -> WorkflowHandle:
    """A review run suspended in ``judge``, asking whether to publish."""
    handle = await cli_graph_app.review.start(
        client, {"text": "hello"}, id=workflow_id, task_queue="default"
    )
    await until(handle, "waiting")
    return handle


async def finished(client: Client, workflow_id: str) -> Any:
    async with asyncio.timeout(WAIT):
        return await client.get_handle(workflow_id).result()


# -- describe --------------------------------------------------------------------------------


def test_describe_shows_the_graph_section_of_a_waiting_run(cli: Cli) -> None:
    with_worker(cli, waiting_review)
    done = cli("describe", "r-1")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    section = lines[lines.index("graph") :]
    assert section[1:5] == [
        "name       review",
        "status     waiting",
        "step       1 (next: judge)",
        'waits for  judge (interrupt, id 1:interrupt:1:judge:0): {"question":"publish hello?"}',
    ]
    assert "| judge |   <- waiting: judge" in section
    assert "| draft |" in section  # the drawing, with only the waiting node marked


def test_describe_json_carries_the_graph_description(cli: Cli) -> None:
    handle = with_worker(cli, waiting_review)
    done = cli("describe", "r-1", "--json")
    history = asyncio.run(_history(cli, handle.workflow_id))
    graph = done.json()["graph"]
    assert graph == describe_graph_run(history)
    assert (graph["graph"], graph["status"], graph["step"]) == ("review", "waiting", 1)
    assert graph["waiting"] == [
        {
            "id": "1:interrupt:1:judge:0",
            "kind": "interrupt",
            "node": "judge",
            "task": "1:judge",
            "value": {"question": "publish hello?"},
        }
    ]


def test_describe_marks_the_node_running_now(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_graph_app, "gate", asyncio.Event())

    async def watch(client: Client) -> tuple[Any, Any]:
        handle = await cli_graph_app.watched.start(client, {}, id="w-1", task_queue="default")
        await until(handle, "running", step=1)
        while_slow = await asyncio.to_thread(cli, "describe", "w-1")
        cli_graph_app.gate.set()
        await finished(client, "w-1")
        return while_slow, await asyncio.to_thread(cli, "describe", "w-1")

    running, done = with_worker(cli, watch)
    assert "running  slow" in running.out.splitlines()
    assert "| slow |   <- running: slow" in running.out.splitlines()
    assert "status  completed" in done.out.splitlines()
    assert "<- running" not in done.out


def test_describe_of_a_workflow_that_is_not_a_graph_has_no_graph_section(cli: Cli) -> None:
    cli.run(lambda client: client.execute_workflow("hello", "ann", id="h-1"))
    text, data = cli("describe", "h-1"), cli("describe", "h-1", "--json")
    assert "graph" not in text.out.splitlines()
    assert data.json()["graph"] is None


# -- graph -----------------------------------------------------------------------------------


def test_graph_draws_the_run_with_the_waiting_node_marked(cli: Cli) -> None:
    with_worker(cli, waiting_review)
    done = cli("graph", "r-1")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert "status       waiting" in lines
    marked = lines.index("| judge |   <- waiting: judge")
    assert lines[marked - 1] == lines[marked + 1] == "+=======+"
    assert "    judge -.ok.-> publish" in lines
    assert "    judge -.again.-> draft   (loops back)" in lines


def test_graph_mermaid_highlights_the_waiting_node(cli: Cli) -> None:
    with_worker(cli, waiting_review)
    done = cli("graph", "r-1", "--mermaid")
    assert done.code == 0, done.err
    assert done.out.startswith("graph TD;\n")
    assert "\tjudge -. ok .-> publish;\n" in done.out
    assert "\tclass judge waiting;\n" in done.out
    assert cli("graph", "r-1", "--mermaid", "--json").json()["mermaid"] == done.out


def test_graph_states_lists_the_state_after_each_super_step(cli: Cli) -> None:
    async def answered(client: Client) -> None:
        handle = await waiting_review(client)
        resumed = await asyncio.to_thread(
            cli, "signal", "r-1", "__graph_resume", "--arg", '{"value": "yes"}'
        )
        assert resumed.code == 0, resumed.err
        await finished(client, handle.workflow_id)

    with_worker(cli, answered)
    states = cli("graph", "r-1", "--states", "--json").json()
    table = cli("graph", "r-1", "--states").out.splitlines()
    assert [(s["step"], s["source"], s["next"]) for s in states] == [
        (0, "input", ["draft"]),
        (1, "loop", ["judge"]),
        (1, "interrupt", ["judge"]),
        (2, "loop", ["publish"]),
        (3, "loop", []),
    ]
    assert states[2]["waiting"][0]["node"] == "judge"
    assert states[-1]["state"] == {
        "text": "hello",
        "answer": "yes",
        "log": ["drafted hello", "published"],
    }
    assert table[0].split() == [
        "STEP",
        "SOURCE",
        "NEXT",
        "WAITING",
        "EVENT",
        "TIME",
        "(UTC)",
        "STATE",
    ]
    assert table[3].split()[:4] == ["1", "interrupt", "judge", "judge"]
    assert len(table) == 1 + len(states)


def test_graph_states_follow_a_run_that_continued_as_new(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine._instance, "HISTORY_WARN_EVENTS", 12)
    with_worker(
        cli,
        lambda client: cli_graph_app.ticker.invoke(client, {}, id="t-1", task_queue="default"),
    )
    states = cli("graph", "t-1", "--states", "--json").json()
    table = cli("graph", "t-1", "--states").out.splitlines()
    assert [s["step"] for s in states if s["source"] == "loop"] == [1, 2, 3, 4, 5, 6]
    assert len({s["run_id"] for s in states}) > 1
    assert "RUN ID" in table[0]


def test_after_a_resume_from_the_shell_the_run_no_longer_waits(cli: Cli) -> None:
    with_worker(cli, waiting_review)
    resumed = cli("signal", "r-1", "__graph_resume", "--arg", '{"value": "yes"}')
    pending = cli("graph", "r-1", "--json").json()
    result = with_worker(cli, lambda client: finished(client, "r-1"))
    assert resumed.code == 0, resumed.err
    assert (pending["status"], pending["waiting"]) == ("running", [])
    assert result["log"] == ["drafted hello", "published"]
    assert cli("graph", "r-1", "--json").json()["status"] == "completed"


def test_graph_of_a_workflow_that_is_not_a_graph_is_an_error(cli: Cli) -> None:
    cli.run(lambda client: client.execute_workflow("hello", "ann", id="h-1"))
    done = cli("graph", "h-1")
    assert done.code == 1
    assert "workflow 'h-1' (run " in done.error_line()
    assert "is not a graph run" in done.error_line()


def test_graph_of_an_unknown_id_is_an_error(cli: Cli) -> None:
    with_worker(cli, waiting_review)
    done = cli("graph", "nope")
    assert done.code == 1
    assert "no workflow or run with id 'nope'" in done.error_line()


def test_graph_mermaid_and_states_together_is_a_usage_error(cli: Cli) -> None:
    done = cli("graph", "r-1", "--mermaid", "--states")
    assert done.code == 2
    assert "not allowed with argument" in done.err


async def _history(cli: Cli, workflow_id: str) -> list[Any]:
    async with open_client(cli.url) as client:
        return list(await client.get_handle(workflow_id).history())
