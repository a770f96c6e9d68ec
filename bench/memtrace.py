"""`python bench/memtrace.py OUT EVERY_S ARGS...`: `python -m relay ARGS...` under
tracemalloc, one JSON line into OUT every EVERY_S seconds (bench/soak.py --memtrace).

Each line: `at_s` (since the start), `rss_mb` (VmRSS), `traced_mb` (what tracemalloc
counts: the Python heap's allocations), `objects` (gc-tracked objects) and `types` (the
20 most numerous types), and `growth` (the 15 tracebacks whose traced size grew most
since the first sample after `warmup`, RELAY_MEMTRACE_WARMUP_S, default 60 s). A bench
tool only: tracemalloc slows every allocation and keeps 25 frames per block.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

FRAMES = 25


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def where(stat: tracemalloc.StatisticDiff) -> str:
    """The traceback's innermost relay frame, else its innermost frame, as file:line."""
    frames = list(stat.traceback)
    frame = next((f for f in frames if "/relay/" in f.filename), frames[0])
    return f"{frame.filename.rsplit('/relay/', 1)[-1]}:{frame.lineno}"


def sample(started: float, base: tracemalloc.Snapshot | None) -> tuple[dict[str, Any], Any]:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    types = Counter(type(o).__name__ for o in gc.get_objects())
    line: dict[str, Any] = {
        "at_s": round(time.monotonic() - started, 1),
        "time": time.time(),  # to line up with the soak's own clock
        "rss_mb": round(rss_mb(), 2),
        "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),
        "objects": sum(types.values()),
        "types": dict(types.most_common(20)),
    }
    if base is not None:
        stats = snapshot.compare_to(base, "traceback")[:15]
        line["growth"] = [
            {
                "kb": round(s.size_diff / 1024, 1),
                "count": s.count_diff,
                "at": where(s),
                "stack": [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in s.traceback][-8:],
            }
            for s in stats
        ]
    return line, snapshot


def watch(out: Path, every_s: float, warmup_s: float, started: float) -> None:
    base: tracemalloc.Snapshot | None = None
    with out.open("a") as handle:
        while True:
            time.sleep(every_s)
            line, snapshot = sample(started, base)
            if base is None and line["at_s"] >= warmup_s:
                base = snapshot
            handle.write(json.dumps(line) + "\n")
            handle.flush()


def main() -> None:
    out, every_s, args = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    warmup_s = float(os.environ.get("RELAY_MEMTRACE_WARMUP_S", "60"))
    tracemalloc.start(FRAMES)
    started = time.monotonic()
    threading.Thread(target=watch, args=(out, every_s, warmup_s, started), daemon=True).start()
    sys.argv = ["relay", *args]
    runpy.run_module("relay", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
