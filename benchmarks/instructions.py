"""Instructions per step, counted by valgrind's callgrind: a figure that noise cannot move.

``python benchmarks/instructions.py [--runs N] [--steps S]`` runs three processes under
``valgrind --tool=callgrind`` (in parallel): start-up alone (open a store, start a worker, one
10-step warm-up run), the same plus ``N`` workflows of 10 no-op activities started at once (the
throughput shape), and the same plus one ``S``-step sequential workflow (the latency shape).
Subtracting the first from the others leaves the instructions the runtime executes per step,
in every thread of the process, user space only.

Why: the wall-clock benchmarks on these shared 2-core machines move by 20-50% from one run to
the next, so a change worth 5% cannot be seen in them. Instruction counts repeat to within
about 1% whatever else the machine does. They do not see time spent waiting (fsync, the GIL)
nor cache misses (the garbage collector's share is larger in time than in instructions), so
every change is also checked with ``make bench``; this only says whether the runtime does
less work per step.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import REPO


async def _workload(runs: int, steps: int) -> None:
    from benchmarks._harness import quiet_logging
    from benchmarks._perdura import TASK_QUEUE, noop, sequential
    from history import SqliteStore
    from sdk import Client, open_worker

    quiet_logging()
    folder = Path(tempfile.mkdtemp(prefix="perdura-instructions-"))
    try:
        store = await SqliteStore.open(folder / "p.db")
        client = Client(store, seed=1)
        async with open_worker(
            client, task_queue=TASK_QUEUE, workflows=[sequential], activities=[noop]
        ):
            await client.execute_workflow(sequential, 10, id="warmup", task_queue=TASK_QUEUE)
            if runs:
                handles = await asyncio.gather(
                    *(
                        client.start_workflow(sequential, 10, id=f"t{i}", task_queue=TASK_QUEUE)
                        for i in range(runs)
                    )
                )
                await asyncio.gather(*(h.result() for h in handles))
            if steps:
                await client.execute_workflow(sequential, steps, id="s", task_queue=TASK_QUEUE)
        await store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _count(runs: int, steps: int) -> int:
    """Total instructions of one workload process under callgrind."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--workload",
                str(runs),
                str(steps),
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="throughput shape: runs of 10")
    parser.add_argument("--steps", type=int, default=200, help="latency shape: steps")
    parser.add_argument("--workload", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        asyncio.run(_workload(*args.workload))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    shapes = [(0, 0), (args.runs, 0), (0, args.steps)]
    with ThreadPoolExecutor(len(shapes)) as pool:
        base, throughput, latency = pool.map(lambda shape: _count(*shape), shapes)
    print(f"start-up:          {base:>14,} instructions")
    print(
        f"throughput shape:  {(throughput - base) / (args.runs * 10):>14,.0f} instructions/step "
        f"({args.runs} runs x 10 steps)"
    )
    print(
        f"latency shape:     {(latency - base) / args.steps:>14,.0f} instructions/step "
        f"(one run of {args.steps} steps)"
    )


if __name__ == "__main__":
    main()
