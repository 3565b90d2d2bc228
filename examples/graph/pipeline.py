"""(a) A three-step pipeline whose steps fail at random and retry with backoff.

``extract -> transform -> load``: each step is a node, so each runs as an activity with its
own retry policy. Every attempt fails with probability ``$PERDURA_PIPELINE_FAILURE_RATE``
(default 0.3), like a flaky network would; the retry policy waits 0.1 s, 0.2 s, 0.4 s … and
the run carries on. The dice are seeded per attempt (idempotency key and attempt number), so
an attempt that is run again after a crash fails or succeeds the same way.

Serve and run it::

    perdura worker --app examples.graph.pipeline:graph --task-queue pipeline
    python -m examples.graph.pipeline
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

import msgspec

from sdk import RetryPolicy, activity, open_client, open_worker
from sdk.graph import END, START, StateGraph

__all__ = ["FAILURE_RATE_ENV", "RETRY", "Document", "graph", "main"]

FAILURE_RATE_ENV = "PERDURA_PIPELINE_FAILURE_RATE"

RETRY = RetryPolicy(
    initial_interval=0.1, backoff_coefficient=2.0, maximum_interval=2.0, maximum_attempts=30
)
"""30 attempts at 30 % failure: the chance that a step never succeeds is 0.3**30."""


class Document(msgspec.Struct, kw_only=True):
    source: str
    raw: str = ""
    words: list[str] = []
    stored_as: str = ""


class TransientError(Exception):
    """What a flaky dependency raises; retried by the step's policy."""


def _flaky(step: str) -> None:
    rate = float(os.environ.get(FAILURE_RATE_ENV, "0.3"))
    info = activity.info()
    dice = random.Random(f"{info.idempotency_key}/{info.attempt}")
    if dice.random() < rate:
        raise TransientError(f"{step}: upstream unavailable (attempt {info.attempt})")


def extract(doc: Document) -> dict[str, str]:
    _flaky("extract")
    return {"raw": f"  The quick brown fox jumps over {doc.source}  "}


def transform(doc: Document) -> dict[str, list[str]]:
    _flaky("transform")
    return {"words": doc.raw.strip().lower().split()}


async def load(doc: Document) -> dict[str, str]:
    _flaky("load")
    return {"stored_as": f"{doc.source}:{len(doc.words)}-words"}


builder = StateGraph(Document)
builder.add_node("extract", extract, retry_policy=RETRY, timeout=30)
builder.add_node("transform", transform, retry_policy=RETRY, timeout=30)
builder.add_node("load", load, retry_policy=RETRY, timeout=30)
builder.add_edge(START, "extract")
builder.add_edge("extract", "transform")
builder.add_edge("transform", "load")
builder.add_edge("load", END)
graph = builder.compile(name="pipeline")


async def main(store: str = "sqlite:///pipeline.db") -> Document:
    async with open_client(store) as client:
        async with open_worker(
            client, task_queue="pipeline", workflows=graph.workflows, activities=graph.activities
        ):
            handle = await graph.start(
                client, Document(source="the-lazy-dog"), id="pipeline-1", task_queue="pipeline"
            )
            result: Document = await handle.result()
            return result


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:])))
