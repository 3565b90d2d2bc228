"""Scale-out throughput: 1, 2 and 4 worker processes on PostgreSQL and on SQLite.

What is measured
----------------
``runs`` workflows of ``steps`` sequential no-op activities each (a *step* is one activity
awaited by workflow code: scheduled, run eagerly on the worker, its result recorded), run by
1, 2 and 4 worker *processes* sharing one store: a fresh PostgreSQL schema (asyncpg,
``LISTEN``/``NOTIFY`` wake-ups, ``FOR UPDATE SKIP LOCKED`` claims) or a fresh SQLite file
(WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` writers queued on the busy timeout).

The workers are started and ready first; the clock runs from the first ``start_workflow``
(made by this process, concurrently in batches) to the moment every run has completed, so run
creation from one client is part of every figure alike. Reported: steps per second and the
ratio to one worker of the same store.

Why
---
One SQLite file has one writer at a time: more processes add contention, not throughput,
which is why the docs tell users to move to PostgreSQL to scale out. PostgreSQL takes
concurrent writers; how far the figures go with more processes depends on the cores the
workers and the server share (this machine has 2 — more than 2 worker processes there only
add scheduling), so the ratios say more than the absolute numbers.

Run: ``.venv/bin/python benchmarks/scaleout.py [--quick] [--runs N] [--steps N]
[--workers 1,2,4] [--stores postgresql,sqlite] [--postgres URL] [--repeat N]``. ``--quick`` is
100 runs of 3 steps; each cell is the median of ``--repeat`` measurements (default 3). Next to
each measurement it prints the CPU milliseconds per step of the worker processes, of the
PostgreSQL server and of the client (read from /proc), which tells where the time goes. The
PostgreSQL server is ``$PERDURA_BENCH_POSTGRES_URL`` or the local default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Run as a script, ``sys.path[0]`` is ``benchmarks/``: put the repository first so the
# checked-out ``engine``/``history``/``sdk`` are imported whatever the venv's install says.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import structlog

from history import RunQuery, RunStatus, Store, open_store
from sdk import Client, Worker, activity, workflow

QUEUE = "scaleout-bench"
DEFAULT_POSTGRES = os.environ.get(
    "PERDURA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@activity.defn
async def noop(i: int) -> int:
    return i


@workflow.defn
async def stepper(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += await noop(i)
    return total


# -- the worker process ----------------------------------------------------------------------


async def serve(url: str, identity: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    store = await open_store(url)
    worker = Worker(
        store,
        task_queue=QUEUE,
        workflows=[stepper],
        activities=[noop],
        identity=identity,
        keep_alive=0.05,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        print("worker ready", flush=True)
        await stop.wait()
    await store.close()


# -- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    store: str
    workers: int
    seconds: float
    steps: int
    worker_cpu: float | None = None
    """CPU seconds the worker processes used (user + system), if /proc can tell."""
    server_cpu: float | None = None
    """CPU seconds the PostgreSQL server processes used meanwhile (PostgreSQL only)."""
    client_cpu: float | None = None

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    def cpu_per_step(self) -> str:
        """Milliseconds of CPU per step: workers / server / client."""
        parts = []
        for label, value in (
            ("workers", self.worker_cpu),
            ("server", self.server_cpu),
            ("client", self.client_cpu),
        ):
            if value is not None:
                parts.append(f"{label} {value / self.steps * 1000:.2f}")
        return ", ".join(parts)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) ``pid`` has used, from /proc; ``None`` elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every local process named ``postgres`` (the server and its backends)."""
    usage: dict[int, float] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return usage
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        cpu = process_cpu(int(entry.name))
        if cpu is not None:
            usage[int(entry.name)] = cpu
    return usage


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two ``postgres_cpu`` readings (backends started meanwhile from 0;
    those that exited meanwhile are lost: workers' connections live to the end)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def start_workers(url: str, count: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        log = open(log_dir / f"worker-{i}.log", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve", url, "--identity", f"bench-{i}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 60
    for i, proc in enumerate(procs):
        path = log_dir / f"worker-{i}.log"
        while b"worker ready" not in path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {i} did not start:\n{path.read_text()}")
            time.sleep(0.05)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def drive(store: Store, runs: int, steps: int) -> float:
    client = Client(store)
    began = time.perf_counter()
    for start in range(0, runs, 50):
        await asyncio.gather(
            *(
                client.start_workflow(stepper, steps, id=f"b-{n}", task_queue=QUEUE)
                for n in range(start, min(start + 50, runs))
            )
        )
    # The runs close in other processes: nothing here can be awaited but the store itself.
    while await store.count_runs(RunQuery(status=RunStatus.COMPLETED)) < runs:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return time.perf_counter() - began


async def measure(kind: str, workers: int, args: argparse.Namespace, folder: Path) -> Sample:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if kind == "postgresql":
        separator = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{separator}schema={schema}"
    else:
        url = f"sqlite:///{folder / f'{kind}-{workers}-{schema}.db'}"
    store = await open_store(url)
    procs = start_workers(url, workers, folder)
    worker_cpu = server_cpu = client_cpu = None
    try:
        workers_before = [process_cpu(p.pid) for p in procs]
        server_before = postgres_cpu()
        client_before = time.process_time()
        seconds = await drive(store, args.runs, args.steps)
        client_cpu = time.process_time() - client_before
        workers_after = [process_cpu(p.pid) for p in procs]
        if all(c is not None for c in workers_before + workers_after):
            worker_cpu = sum(
                (a or 0.0) - (b or 0.0) for a, b in zip(workers_after, workers_before, strict=True)
            )
        if kind == "postgresql" and server_before:
            server_cpu = cpu_delta(server_before, postgres_cpu())
    finally:
        stop_workers(procs)
        await store.close()
        if kind == "postgresql":
            conn = await asyncpg.connect(args.postgres)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    return Sample(
        kind, workers, seconds, args.runs * args.steps, worker_cpu, server_cpu, client_cpu
    )


def report(samples: list[Sample], args: argparse.Namespace) -> str:
    counts = sorted({s.workers for s in samples})
    stores = [k for k in args.stores if any(s.store == k for s in samples)]
    lines = [
        f"perdura scale-out: {args.runs} runs x {args.steps} steps, worker processes "
        f"{', '.join(map(str, counts))}; {os.cpu_count()} CPUs; median of {args.repeat}",
        "",
        f"{'store':<12}" + "".join(f"{f'{n} worker(s)':>22}" for n in counts),
    ]
    for kind in stores:
        by_count = {s.workers: s for s in samples if s.store == kind}
        base = by_count.get(counts[0])
        cells = []
        for n in counts:
            sample = by_count.get(n)
            if sample is None:
                cells.append(f"{'-':>22}")
                continue
            ratio = f" ({sample.steps_per_second / base.steps_per_second:.2f}x)" if base else ""
            cells.append(f"{f'{sample.steps_per_second:,.0f} steps/s{ratio}':>22}")
        lines.append(f"{kind:<12}" + "".join(cells))
    if "postgresql" in stores and "sqlite" in stores:
        lines.append("")
        for n in counts:
            pg = next((s for s in samples if s.store == "postgresql" and s.workers == n), None)
            lite = next((s for s in samples if s.store == "sqlite" and s.workers == n), None)
            if pg and lite:
                lines.append(
                    f"{n} worker(s): PostgreSQL / SQLite = "
                    f"{pg.steps_per_second / lite.steps_per_second:.2f}"
                )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="perdura-scaleout-") as tmp:
        for workers in args.workers:
            for kind in args.stores:
                repeats: list[Sample] = []
                for _ in range(args.repeat):
                    sample = await measure(kind, workers, args, Path(tmp))
                    print(
                        f"  {kind:<11} {workers} worker(s): "
                        f"{sample.steps_per_second:,.0f} steps/s ({sample.seconds:.2f}s; "
                        f"CPU ms/step: {sample.cpu_per_step()})",
                        flush=True,
                    )
                    repeats.append(sample)
                # The median repetition: a machine shared with other work is noisy.
                repeats.sort(key=lambda r: r.steps_per_second)
                samples.append(repeats[len(repeats) // 2])
    print()
    print(report(samples, args))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 runs of 3 steps")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--stores", default="postgresql,sqlite", help="comma-separated")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements per cell; the median is reported"
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--identity", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.runs = args.runs or (100 if args.quick else 400)
    args.steps = args.steps or (3 if args.quick else 5)
    args.workers = [int(n) for n in args.workers.split(",")]
    args.stores = [s.strip() for s in args.stores.split(",")]
    for kind in args.stores:
        if kind not in ("postgresql", "sqlite"):
            parser.error(f"unknown store {kind!r}: choose postgresql and/or sqlite")
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.identity))
    else:
        asyncio.run(main(arguments))
