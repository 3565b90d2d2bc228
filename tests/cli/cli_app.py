"""The workflows the CLI tests run (``--app cli_app:app --app-dir tests/cli``).

``steps`` records which steps ran, so a test can tell a recorded result that was kept from
one that was computed again; ``broken`` makes a step fail for good.
"""

from __future__ import annotations

from collections import Counter

from engine import App
from sdk import RetryPolicy, activity, workflow

ONCE = RetryPolicy(initial_interval=0.0, maximum_attempts=1)

steps: Counter[str] = Counter()
broken: set[str] = set()


@activity.defn
async def step(name: str) -> str:
    steps[name] += 1
    if name in broken:
        raise RuntimeError(f"{name} is broken")
    return f"{name}-done"


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
async def hello(name: str) -> str:
    greeting = await greet(name)
    return greeting.upper()


@workflow.defn
async def pipeline(tag: str) -> list[str]:
    results = []
    for name in ("extract", "transform", "load"):
        results.append(await workflow.execute_activity(step, f"{tag}:{name}", retry_policy=ONCE))
    return results


@workflow.defn
class Approval:
    """Waits for an ``approve`` signal; ``status`` answers what it knows so far."""

    def __init__(self) -> None:
        self.approver: str | None = None

    @workflow.run
    async def run(self, item: str) -> str:
        await workflow.execute_activity(step, f"{item}:prepare", retry_policy=ONCE)
        await workflow.wait_condition(lambda: self.approver is not None)
        return f"{item} approved by {self.approver}"

    @workflow.signal
    def approve(self, approver: str) -> None:
        self.approver = approver

    @workflow.query
    def status(self, prefix: str = "") -> str:
        return f"{prefix}{'approved' if self.approver else 'waiting'}"


@workflow.defn
async def napping(seconds: float) -> str:
    await workflow.sleep(seconds)
    return "rested"


app = App(workflows=[hello, pipeline, Approval, napping], activities=[greet, step])
