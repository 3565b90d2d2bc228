"""(c) A coordinator that fans out one child run per task and gathers the results.

The coordinator graph plans the tasks, then its router returns one ``Send("work", task)`` per
task: ``work`` is a sub-graph node, so each task becomes a child workflow run of the
``work-item`` graph on the ``workers`` task queue (served by other worker processes), with a
stable id ``<coordinator id>/<step>:work:<n>``. The next super-step, ``gather``, runs once all
children have finished; each child's result lands in ``results`` through the append strategy.

Serve the two queues (the same app serves both graphs)::

    perdura worker --app examples.graph.coordinator:app --task-queue coordinator
    perdura worker --app examples.graph.coordinator:app --task-queue workers

``$PERDURA_COORDINATOR_LEDGER``, if set, gets one ``task\\tattempt\\tpid`` line per execution of
the ``solve`` step, to count executions across processes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any, TypedDict

from sdk import App, activity, open_client, open_worker
from sdk.graph import END, START, Send, StateGraph, append

__all__ = ["LEDGER_ENV", "Job", "WorkItem", "app", "coordinator", "main", "work_item"]

LEDGER_ENV = "PERDURA_COORDINATOR_LEDGER"
WORKERS_QUEUE = "workers"


class WorkItem(TypedDict, total=False):
    task: str
    result: str


def solve(item: WorkItem) -> dict[str, str]:
    path = os.environ.get(LEDGER_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(f"{item['task']}\t{activity.info().attempt}\t{os.getpid()}\n")
    return {"result": item["task"][::-1].upper()}


_child = StateGraph(WorkItem)
_child.add_node("solve", solve)
_child.add_edge(START, "solve")
_child.add_edge("solve", END)
work_item = _child.compile(name="work-item")


class Job(TypedDict, total=False):
    request: str
    tasks: list[str]
    results: Annotated[list[dict[str, str]], append]
    report: str


def plan(job: Job) -> dict[str, Any]:
    return {"tasks": [word for word in job["request"].split() if word]}


def fan_out(job: Job) -> list[Send]:
    return [Send("work", {"task": task}) for task in job["tasks"]]


def gather(job: Job) -> dict[str, str]:
    by_task = {r["task"]: r["result"] for r in job["results"]}
    return {"report": " ".join(by_task[task] for task in job["tasks"])}


_parent = StateGraph(Job)
_parent.add_node("plan", plan)
_parent.add_node(
    "work",
    work_item,
    task_queue=WORKERS_QUEUE,
    output=lambda item: {"results": [{"task": item["task"], "result": item["result"]}]},
)
_parent.add_node("gather", gather)
_parent.add_edge(START, "plan")
_parent.add_conditional_edges("plan", fan_out, ["work"])
_parent.add_edge("work", "gather")
_parent.add_edge("gather", END)
coordinator = _parent.compile(name="coordinator")

app = App(workflows=coordinator.workflows, activities=coordinator.activities)


async def main(store: str = "sqlite:///coordinator.db") -> Any:
    async with open_client(store) as client:
        async with (
            open_worker(
                client,
                task_queue="coordinator",
                workflows=app.workflows,
                activities=app.activities,
            ),
            open_worker(
                client,
                task_queue=WORKERS_QUEUE,
                workflows=app.workflows,
                activities=app.activities,
            ),
        ):
            handle = await coordinator.start(
                client, {"request": "alpha beta gamma"}, id="job-1", task_queue="coordinator"
            )
            return await handle.result()


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:]))["report"])
