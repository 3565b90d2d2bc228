"""Child-process entry point: ``python -m benchmarks.child SYSTEM BENCH PARAMS_JSON``.

``SYSTEM`` names a module ``benchmarks._SYSTEM`` (perdura, raw, dbos, langgraph) whose
``BENCHES`` maps a benchmark name to a function of its parameters; the function's metrics are
printed as one result line (see ``benchmarks._harness``). The parent creates the working
folder (``params["folder"]``) and removes it afterwards.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import cast

from benchmarks._harness import Metrics, Params, emit, quiet_logging


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m benchmarks.child SYSTEM BENCH PARAMS_JSON\n")
        return 2
    system, bench, raw_params = argv
    quiet_logging()
    module = importlib.import_module(f"benchmarks._{system}")
    benches = cast(dict[str, Callable[[Params], Metrics]], module.BENCHES)
    if bench not in benches:
        sys.stderr.write(f"{system} has no benchmark {bench!r} (has: {', '.join(benches)})\n")
        return 2
    params: Params = json.loads(raw_params)
    emit(benches[bench](params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
