"""How long the garbage collector stops the process, by generation.

One gevent worker runs every connection on one thread: while the cyclic
collector walks the heap, nobody is served. A full (generation 2)
collection walks every object an instance keeps for its connections, so
its pause grows with the connections held, and it shows in every user's
latency at once. ``chat_gc_pause_seconds`` makes that visible.
"""

from __future__ import annotations

import gc
import time

from chat.observe import metrics

_started: list[float] = []


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        metrics.GC_PAUSE.labels(str(info["generation"])).observe(
            time.perf_counter() - _started.pop()
        )


def watch() -> None:
    """Time every collection from now on (once per process)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
