"""`python bench/memtrace.py OUT EVERY_S ARGS...`: `python -m relay ARGS...` under
tracemalloc, one JSON line into OUT every EVERY_S seconds (bench/soak.py --memtrace).

Each line: `at_s` (since the start), `rss_mb` (VmRSS), `traced_mb` (what tracemalloc
counts: the Python heap's allocations), `tracemalloc_mb` (its own tables), `objects`
(gc-tracked objects), `types` (the 20 most numerous types) and `livekit` (the count of
every type of the livekit SDK's modules alive: a Room or FfiHandle kept after its room
was left pins its native side). And two snapshots
(`tracemalloc.Snapshot.dump`) to compare by traceback: OUT.base.snap, the first sample
after the warm-up (RELAY_MEMTRACE_WARMUP_S, default 60 s), and OUT.last.snap, renewed
every SNAP_EVERY samples. A bench tool only: tracemalloc slows every allocation and keeps
25 frames per block, and its tables and snapshots weigh in VmRSS (compare VmRSS with a
run without it). RELAY_MEMTRACE_TRACEMALLOC=0: no tracemalloc (object counts and VmRSS
only, at full speed; no snapshots).
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
SNAP_EVERY = 4


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _is_livekit(kind: type) -> bool:
    module = getattr(kind, "__module__", None)  # not always a str (a descriptor, None)
    return isinstance(module, str) and module.startswith("livekit")


def sample(started: float) -> dict[str, Any]:
    objects = gc.get_objects()
    types = Counter(type(o).__name__ for o in objects)
    livekit = Counter(type(o).__qualname__ for o in objects if _is_livekit(type(o)))
    return {
        "at_s": round(time.monotonic() - started, 1),
        "time": time.time(),  # to line up with the soak's own clock
        "rss_mb": round(rss_mb(), 2),
        "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2),  # 0 when off
        # tracemalloc's own tables: in VmRSS, not in traced_mb
        "tracemalloc_mb": round(tracemalloc.get_tracemalloc_memory() / 2**20, 2),
        "objects": sum(types.values()),
        "types": dict(types.most_common(20)),
        "livekit": dict(livekit.most_common()),
    }


def dump(path: Path) -> None:
    """A snapshot to a file, written beside and renamed (the reader never sees half)."""
    tracemalloc.take_snapshot().dump(str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def watch(out: Path, every_s: float, warmup_s: float, started: float) -> None:
    # Snapshots are costly (the loop stalls while one is taken): the first after the
    # warm-up (OUT.base.snap), then every SNAP_EVERY samples (OUT.last.snap).
    taken = -1
    with out.open("a") as handle:
        while True:
            time.sleep(every_s)
            line = sample(started)
            if line["at_s"] >= warmup_s and tracemalloc.is_tracing():
                taken += 1
                if taken == 0:
                    dump(out.with_suffix(".base.snap"))
                elif taken % SNAP_EVERY == 0:
                    dump(out.with_suffix(".last.snap"))
            handle.write(json.dumps(line) + "\n")
            handle.flush()


def main() -> None:
    out, every_s, args = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    warmup_s = float(os.environ.get("RELAY_MEMTRACE_WARMUP_S", "60"))
    if os.environ.get("RELAY_MEMTRACE_TRACEMALLOC", "1") != "0":
        tracemalloc.start(FRAMES)
    started = time.monotonic()
    threading.Thread(target=watch, args=(out, every_s, warmup_s, started), daemon=True).start()
    sys.argv = ["relay", *args]
    runpy.run_module("relay", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
