"""Profile perdura on the workloads where the suite reports a MISS, with py-spy.

``python benchmarks/profile.py NAME [--rate HZ] [--native] [--no-gc]`` runs one scenario
under ``py-spy record`` (raw collapsed stacks, one line per distinct stack) and writes
``benchmarks/results/profile-NAME.txt.gz`` (py-spy's raw output, gzipped; ``zcat`` it into
``flamegraph.pl`` or speedscope) and
``benchmarks/results/profile-NAME-top.txt`` (a summary: the busiest lines by self time and
the busiest functions by inclusive time, restricted to what ran on CPU).

py-spy, not cProfile: the workflow sandbox runs a ``sys.setprofile`` hook while workflow code
steps, which switches C-level profilers such as cProfile off after the first step. py-spy
samples from outside the process and is unaffected.

Scenarios (each long enough for a few thousand samples at the default rate):

latency     one workflow of 3,000 sequential no-op activities, durability FULL.
throughput  2,000 workflows of 10 no-op activities started at once, durability FULL.
replay      ``engine.replay_history`` of a 20,000-step (40,000-event) history, 5 times; the
            history is built first, in a separate process that is not profiled.
recovery    the resume path of a 1,000-step run, 30 times: read the history from the store
            and replay it into a fresh instance (what a new worker does before its first step).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import gc
import gzip
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import REPO, quiet_logging

RESULTS = REPO / "benchmarks" / "results"
SCENARIOS = ("latency", "throughput", "replay", "recovery")


# -- scenarios (run inside the profiled process) ---------------------------------------------


async def _latency(folder: Path) -> None:
    from benchmarks._perdura import TASK_QUEUE, noop, sequential
    from history import SqliteStore
    from sdk import Client, open_worker

    store = await SqliteStore.open(folder / "p.db")
    try:
        client = Client(store, seed=1)
        async with open_worker(
            client, task_queue=TASK_QUEUE, workflows=[sequential], activities=[noop]
        ):
            await client.execute_workflow(sequential, 3000, id="p", task_queue=TASK_QUEUE)
    finally:
        await store.close()


async def _throughput(folder: Path) -> None:
    from benchmarks._perdura import TASK_QUEUE, noop, sequential
    from history import SqliteStore
    from sdk import Client, open_worker

    store = await SqliteStore.open(folder / "p.db")
    try:
        client = Client(store, seed=1)
        async with open_worker(
            client, task_queue=TASK_QUEUE, workflows=[sequential], activities=[noop]
        ):
            handles = await asyncio.gather(
                *(
                    client.start_workflow(sequential, 10, id=f"t{i}", task_queue=TASK_QUEUE)
                    for i in range(2000)
                )
            )
            await asyncio.gather(*(h.result() for h in handles))
    finally:
        await store.close()


async def _build(folder: Path, steps: int) -> None:
    from benchmarks._perdura import TASK_QUEUE, noop, sequential
    from history import SqliteStore
    from sdk import Client, Durability, open_worker

    store = await SqliteStore.open(folder / "p.db", durability=Durability.NORMAL)
    try:
        client = Client(store, seed=1)
        async with open_worker(
            client, task_queue=TASK_QUEUE, workflows=[sequential], activities=[noop]
        ):
            await client.execute_workflow(sequential, steps, id="h", task_queue=TASK_QUEUE)
    finally:
        await store.close()


async def _replay(folder: Path, times: int, *, from_store: bool) -> None:
    from benchmarks._perdura import sequential
    from engine import Registry, replay_history
    from history import SqliteStore
    from sdk import Client

    store = await SqliteStore.open(folder / "p.db")
    try:
        client = Client(store)
        handle = client.get_handle("h")
        history = await handle.history()
        registry = Registry([sequential])
        for _ in range(times):
            if from_store:
                history = await handle.history()
            replay_history(registry, history)
    finally:
        await store.close()


def scenario(name: str, folder: Path, *, no_gc: bool = False) -> None:
    quiet_logging()
    if no_gc:
        gc.disable()  # to tell the collector's share from the code's (see --no-gc)
    if name == "latency":
        asyncio.run(_latency(folder))
    elif name == "throughput":
        asyncio.run(_throughput(folder))
    elif name == "replay":
        asyncio.run(_replay(folder, 5, from_store=False))
    elif name == "recovery":
        asyncio.run(_replay(folder, 30, from_store=True))
    elif name.startswith("build-"):
        asyncio.run(_build(folder, int(name.split("-", 1)[1])))
    else:
        raise SystemExit(f"unknown scenario {name!r}")


# -- summarising py-spy's raw output ---------------------------------------------------------


def summarize(raw: Path, top: int = 25) -> str:
    """Per thread: the busiest lines by self samples; for the main thread (where workflow
    code, the driver and the event loop run) also the busiest perdura functions by inclusive
    samples. Samples taken while a module was being imported (process start-up) are counted
    apart, not ranked."""
    threads: dict[str, _Thread] = {}
    imports = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        name = "?"
        if frames and frames[0].startswith("thread ("):
            name = frames[0]
            frames = frames[1:]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        total += count
        if any("_call_with_frames_removed" in f for f in frames):
            imports += count
            continue
        thread = threads.setdefault(name, _Thread())
        thread.samples += count
        if frames:
            thread.self_time[frames[-1]] += count
        seen: set[str] = set()
        for frame in frames:
            function = _function_key(frame)
            if function not in seen:
                seen.add(function)
                thread.inclusive[function] += count
    out = [f"py-spy samples (threads on CPU): {total}; during imports (start-up): {imports}", ""]
    ranked = sorted(threads.items(), key=lambda item: -item[1].samples)
    out.append("by thread:")
    out += [f"  {t.samples:7d} {t.samples / total:6.1%}  {name}" for name, t in ranked]
    for name, thread in ranked:
        if thread.samples < 0.05 * total:
            continue
        n = thread.samples
        out += ["", f"{name}: top {top} lines by self samples (% of this thread)"]
        for frame, c in thread.self_time.most_common(top):
            out.append(f"  {c:7d} {c / n:6.1%}  {frame}")
            source = _source(frame)
            if source:
                out.append(f"                  | {source}")
        if "MainThread" in name:
            ours = [
                (f, c)
                for f, c in thread.inclusive.most_common()
                if any(part in f for part in ("engine/", "history/", "sdk/", "asyncio/"))
            ]
            out += ["", f"{name}: top {top} functions by inclusive samples (% of this thread)"]
            out += [f"  {c:7d} {c / n:6.1%}  {frame}" for frame, c in ours[:top]]
    return "\n".join(out) + "\n"


class _Thread:
    def __init__(self) -> None:
        self.samples = 0
        self.self_time: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()


_ROOTS = (
    REPO,
    Path(sysconfig.get_paths()["stdlib"]),
    Path(sysconfig.get_paths()["purelib"]),
)


@functools.cache
def _lines(relative: str) -> list[str]:
    for root in _ROOTS:
        path = root / relative
        if path.is_file():
            return path.read_text(errors="replace").splitlines()
    return []


def _source(frame: str) -> str:
    """The source line a ``fn (file.py:123)`` frame points at, read right after profiling
    (the tree may move on later: the summary keeps the text, not just the number)."""
    _, _, location = frame.partition(" (")
    path, _, number = location.rstrip(")").rpartition(":")
    if not number.isdigit():
        return ""
    lines = _lines(path)
    index = int(number) - 1
    return lines[index].strip()[:90] if 0 <= index < len(lines) else ""


def _function_key(frame: str) -> str:
    """``fn (file.py:123)`` -> ``fn (file.py)``: inclusive time is per function."""
    name, _, location = frame.partition(" (")
    return f"{name} ({location.rsplit(':', 1)[0]})" if location else name


def _revision() -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "?"


# -- driver ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile a perdura scenario with py-spy.")
    parser.add_argument("name", help=f"one of: {', '.join(SCENARIOS)}")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="disable the cyclic garbage collector in the profiled process: py-spy charges a "
        "collection to whatever line allocated, so compare with and without",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="also sample C frames (py-spy --native): without it, time in C code (asyncio's "
        "C tasks, sqlite3, syscalls) is charged to the nearest Python line",
    )
    parser.add_argument("--scenario", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scenario:
        scenario(args.name, args.folder, no_gc=args.no_gc)
        return 0
    if args.name not in SCENARIOS:
        parser.error(f"unknown scenario {args.name!r}; choose from {', '.join(SCENARIOS)}")
    spy = Path(sys.executable).with_name("py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perdura-profile-") as tmp:
        folder = Path(tmp)
        me = [sys.executable, str(Path(__file__).resolve())]
        if args.name in ("replay", "recovery"):
            steps = 20_000 if args.name == "replay" else 1000
            build = [*me, f"build-{steps}", "--scenario", "--folder", str(folder)]
            subprocess.run(build, check=True, cwd=REPO)
        suffix = ("-nogc" if args.no_gc else "") + ("-native" if args.native else "")
        raw = RESULTS / f"profile-{args.name}{suffix}.txt"
        command = [
            str(spy),
            "record",
            "--format",
            "raw",
            "--rate",
            str(args.rate),
            "--threads",
            *(["--native"] if args.native else []),
            "--output",
            str(raw),
            "--",
            *me,
            args.name,
            "--scenario",
            "--folder",
            str(folder),
            *(["--no-gc"] if args.no_gc else []),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
        elapsed = time.perf_counter() - started
    summary = summarize(raw)
    with raw.open("rb") as plain, gzip.open(raw.with_suffix(".txt.gz"), "wb") as packed:
        shutil.copyfileobj(plain, packed)
    raw.unlink()
    header = (
        f"scenario {args.name}{' (gc disabled)' if args.no_gc else ''}"
        f"{' (native frames)' if args.native else ''}: {elapsed:.1f} s "
        f"under py-spy at {args.rate} Hz; "
        f"working tree {_revision()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
    )
    (RESULTS / f"profile-{args.name}{suffix}-top.txt").write_text(header + summary)
    sys.stdout.write(header + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
