"""Generated workflow programs: plain data, one interpreted workflow, and a pure oracle.

A *program* is a tree of msgspec Structs — activities, durable timers, sequences and
``gather``s — so it travels as the workflow's argument and sits readably in history. Three
readers give it meaning:

* :func:`interpret`, the one ``@workflow.defn`` that runs any program on perdura;
* :func:`expected_outcome`, a pure-Python interpreter of the same program without perdura: the
  oracle every run's result is compared with, crash or no crash;
* :func:`describe`, a compact one-line notation for shrunk counterexamples
  (``seq[a1, gather[a2(fail 2), t1(30s)]]``).

Each activity execution appends one :class:`Execution` to :data:`LEDGER`, outside the store,
tagged with the ledger's current *epoch* (the harness starts a new epoch at every crash or
other disruption), which is how the harness counts re-executions. In a worker subprocess the
ledger is a file named by ``$PERDURA_HARNESS_LEDGER``, one tab-separated line per execution.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import msgspec
from hypothesis import strategies as st

from sdk import ActivityError, ApplicationError, RetryPolicy, activity, workflow

__all__ = [
    "LEDGER",
    "Act",
    "Execution",
    "Failed",
    "Gather",
    "Ledger",
    "Ok",
    "Outcome",
    "Seq",
    "Sleep",
    "Step",
    "describe",
    "expected_outcome",
    "failing_key",
    "interpret",
    "programs",
    "step",
]

# -- the program language ------------------------------------------------------------------


class Act(msgspec.Struct, frozen=True, tag="act"):
    """One activity call. Its first ``fail_times`` attempts fail with a retryable error;
    then it fails non-retryably if ``fatal``, else returns ``"<key>@<attempt>"``.
    ``max_attempts`` (0: unlimited) may end it first; ``catch`` makes the workflow catch
    its final failure and carry on with ``"caught:<key>"``."""

    key: str
    fail_times: int = 0
    fatal: bool = False
    max_attempts: int = 0
    catch: bool = False
    interval: float = 0.01
    """Initial retry interval in seconds (backoff 2)."""

    def __repr__(self) -> str:
        return describe(self)


class Sleep(msgspec.Struct, frozen=True, tag="sleep"):
    """A durable timer; the step's value is ``"slept:<key>"``."""

    key: str
    seconds: float

    def __repr__(self) -> str:
        return describe(self)


class Seq(msgspec.Struct, frozen=True, tag="seq"):
    """Steps one after another; the value is the list of their values."""

    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        return describe(self)


class Gather(msgspec.Struct, frozen=True, tag="gather"):
    """Branches concurrently (``asyncio.gather``); the value is the list of their values.

    Plain (``settle=False``): the first failure in time fails the gather while the other
    branches carry on unobserved. ``settle=True``: ``return_exceptions=True``, then the first
    failure in branch order is raised — deterministic whatever order results arrive in.
    """

    branches: tuple[Step, ...]
    settle: bool = False

    def __repr__(self) -> str:
        return describe(self)


Step: TypeAlias = Act | Sleep | Seq | Gather


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def describe(step: Step) -> str:
    """``seq[a1, gather[a2(fail 2), t1(30s)]]``: the program as a shrunk counterexample shows it."""
    if isinstance(step, Act):
        notes = []
        if step.fail_times:
            notes.append(f"fail {step.fail_times}")
        if step.fatal:
            notes.append("fatal")
        if step.max_attempts:
            notes.append(f"max {step.max_attempts}")
        if step.catch:
            notes.append("caught")
        if step.fail_times or step.max_attempts:
            notes.append(f"retry {_duration(step.interval)}")
        return f"{step.key}({', '.join(notes)})" if notes else step.key
    if isinstance(step, Sleep):
        return f"{step.key}({_duration(step.seconds)})"
    if isinstance(step, Seq):
        return f"seq[{', '.join(describe(s) for s in step.steps)}]"
    kind = "settle" if step.settle else "gather"
    return f"{kind}[{', '.join(describe(b) for b in step.branches)}]"


def leaves(step: Step) -> list[Act | Sleep]:
    if isinstance(step, Act | Sleep):
        return [step]
    children = step.steps if isinstance(step, Seq) else step.branches
    return [leaf for child in children for leaf in leaves(child)]


# -- the oracle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    value: Any


@dataclass(frozen=True)
class Failed:
    """The run fails with the final failure of one of ``keys`` (a plain ``gather`` may
    surface whichever of its failing branches fails first)."""

    keys: frozenset[str]


Outcome: TypeAlias = Ok | Failed


def expected_outcome(step: Step) -> Outcome:
    """What running ``step`` must produce, computed without perdura (and without crashes)."""
    if isinstance(step, Act):
        needed = step.fail_times + 1
        exhausted = step.max_attempts != 0 and step.max_attempts < needed
        if not exhausted and not step.fatal:
            return Ok(f"{step.key}@{needed}")
        return Ok(f"caught:{step.key}") if step.catch else Failed(frozenset({step.key}))
    if isinstance(step, Sleep):
        return Ok(f"slept:{step.key}")
    if isinstance(step, Seq):
        values = []
        for child in step.steps:
            outcome = expected_outcome(child)
            if isinstance(outcome, Failed):
                return outcome
            values.append(outcome.value)
        return Ok(values)
    outcomes = [expected_outcome(branch) for branch in step.branches]
    failed = [o for o in outcomes if isinstance(o, Failed)]
    if not failed:
        return Ok([o.value for o in outcomes if isinstance(o, Ok)])
    if step.settle:
        return failed[0]
    return Failed(frozenset().union(*(f.keys for f in failed)))


_FAILING_KEY = re.compile(r"(?:flaky|fatal):(\w+)")


def failing_key(message: str) -> str | None:
    """The program key named by a recorded workflow failure's message, if any."""
    found = _FAILING_KEY.search(message)
    return found.group(1) if found else None


# -- the ledger ------------------------------------------------------------------------------

LEDGER_ENV = "PERDURA_HARNESS_LEDGER"
EPOCH_ENV = "PERDURA_HARNESS_EPOCH"


@dataclass(frozen=True)
class Execution:
    """One activity attempt that really ran (written as it starts, before any outcome)."""

    run_id: str
    seq: int
    attempt: int
    key: str
    epoch: int


@dataclass
class Ledger:
    """Executions, in memory (in-process harness) or appended to a file (subprocesses)."""

    entries: list[Execution] = field(default_factory=list)
    epoch: int = 0
    path: Path | None = None

    def reset(self) -> None:
        self.entries = []
        self.epoch = 0

    def record(self, run_id: str, seq: int, attempt: int, key: str) -> None:
        if self.path is None:
            self.entries.append(Execution(run_id, seq, attempt, key, self.epoch))
            return
        line = f"{run_id}\t{seq}\t{attempt}\t{key}\t{self.epoch}\n"
        # O_APPEND: one write per line, so a line is whole even if the process is killed.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    @staticmethod
    def read(path: Path) -> list[Execution]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            run_id, seq, attempt, key, epoch = line.split("\t")
            entries.append(Execution(run_id, int(seq), int(attempt), key, int(epoch)))
        return entries


LEDGER = Ledger(
    path=Path(os.environ[LEDGER_ENV]) if os.environ.get(LEDGER_ENV) else None,
    epoch=int(os.environ.get(EPOCH_ENV, "0")),
)

# -- the workflow and its one activity ------------------------------------------------------


@activity.defn(name="harness.step")
async def step(key: str, fail_times: int, fatal: bool) -> str:
    info = activity.info()
    LEDGER.record(info.run_id, info.activity_id, info.attempt, key)
    if info.attempt <= fail_times:
        raise ApplicationError(f"flaky:{key}@{info.attempt}", type="Flaky")
    if fatal:
        raise ApplicationError(f"fatal:{key}", type="Fatal", non_retryable=True)
    return f"{key}@{info.attempt}"


async def _run(node: Step) -> Any:
    if isinstance(node, Act):
        try:
            return await workflow.execute_activity(
                step,
                node.key,
                node.fail_times,
                node.fatal,
                retry_policy=RetryPolicy(
                    initial_interval=node.interval,
                    backoff_coefficient=2.0,
                    maximum_attempts=node.max_attempts,
                ),
            )
        except ActivityError:
            if node.catch:
                return f"caught:{node.key}"
            raise
    if isinstance(node, Sleep):
        await workflow.sleep(node.seconds)
        return f"slept:{node.key}"
    if isinstance(node, Seq):
        return [await _run(child) for child in node.steps]
    if not node.settle:
        return list(await asyncio.gather(*(_run(branch) for branch in node.branches)))
    values = await asyncio.gather(
        *(_run(branch) for branch in node.branches), return_exceptions=True
    )
    for value in values:
        if isinstance(value, BaseException):
            raise value
    return list(values)


@workflow.defn(name="harness.program")
async def interpret(program: Step) -> Any:
    """Runs any generated program."""
    return await _run(program)


# -- strategies ------------------------------------------------------------------------------

LONG_SLEEPS = (1.0, 5.0, 60.0, 3600.0, 30 * 86400.0)
"""Timer durations on a skipped clock: a second up to thirty days."""

SHORT_SLEEPS = (0.01, 0.05, 0.2)
"""Timer durations on the wall clock (worker subprocesses)."""

RETRY_INTERVALS = (0.001, 0.01, 0.5, 2.0)
SHORT_RETRY_INTERVALS = (0.001, 0.01, 0.05)


def _relabel(step: Step) -> Step:
    """Keys in pre-order (``a1, a2 …`` for activities, ``t1 …`` for timers), so a shrunk
    program reads top to bottom and keys stay unique."""
    counters = {"a": 0, "t": 0}

    def go(node: Step) -> Step:
        if isinstance(node, Act):
            counters["a"] += 1
            return msgspec.structs.replace(node, key=f"a{counters['a']}")
        if isinstance(node, Sleep):
            counters["t"] += 1
            return msgspec.structs.replace(node, key=f"t{counters['t']}")
        if isinstance(node, Seq):
            return Seq(tuple(go(child) for child in node.steps))
        return Gather(tuple(go(child) for child in node.branches), node.settle)

    return go(step)


def _acts(intervals: tuple[float, ...]) -> st.SearchStrategy[Act]:
    return st.builds(
        Act,
        key=st.just(""),
        fail_times=st.sampled_from((0, 0, 1, 2, 3)),
        fatal=st.sampled_from((False, False, False, True)),
        max_attempts=st.sampled_from((0, 0, 1, 2, 3)),
        catch=st.booleans(),
        interval=st.sampled_from(intervals),
    )


def programs(
    *,
    max_leaves: int = 6,
    sleeps: tuple[float, ...] = LONG_SLEEPS,
    intervals: tuple[float, ...] = RETRY_INTERVALS,
) -> st.SearchStrategy[Step]:
    """Programs of up to ``max_leaves`` activities and timers, always a ``Seq`` at the top."""
    leaf: st.SearchStrategy[Step] = st.one_of(
        _acts(intervals),
        st.builds(Sleep, key=st.just(""), seconds=st.sampled_from(sleeps)),
    )

    def extend(children: st.SearchStrategy[Step]) -> st.SearchStrategy[Step]:
        return st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda c: Seq(tuple(c))),
            st.builds(
                lambda c, settle: Gather(tuple(c), settle),
                st.lists(children, min_size=2, max_size=3),
                st.booleans(),
            ),
        )

    tree = st.recursive(leaf, extend, max_leaves=max_leaves)

    # A composite (not ``.map``) so that a counterexample shows the program's own repr,
    # ``seq[a1(fail 2), t1(30s)]``, rather than the calls that built it.
    @st.composite
    def program(draw: st.DrawFn) -> Step:
        drawn = draw(tree)
        return _relabel(drawn if isinstance(drawn, Seq) else Seq((drawn,)))

    return program()
