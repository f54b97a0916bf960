"""A change against another revision, in alternating runs.

    .venv/bin/python -m bench.ab REV                   # the churn, 5 runs each
    .venv/bin/python -m bench.ab REV fanout --runs 3   # CPU per delivery, 2 instances
    .venv/bin/python -m bench.ab REV recover           # a killed instance's users back
    .venv/bin/python -m bench.ab REV held              # the churn, 10,000 users held

Most single changes are worth a few per cent, and one run of a workload
moves by more than that: the same code read 1.63 and 1.81 ms per churn
cycle within the hour, and the machine's hour moves every server alike
(docs/benchmarks.md, "Stop 19"). So this runs the two sides one after the
other, alternating which goes first, each run on its own private Redis,
and prints every run and the medians. REV is checked out into a scratch
worktree that borrows this checkout's environments (``.venv``,
``node_modules``, the vendored client); the other side is this checkout,
uncommitted changes included. The workloads are ``bench.run``'s, as REV
and this checkout each have them: ``STORM_SECONDS`` (20 here) sets the
churn's length, ``BENCH_QUICK=1`` makes everything small.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.procs import ROOT

# Run inside each side's tree: only what bench.run has had since the churn,
# fan-out and recover workloads were written.
RUNNER = """
import json, os, pathlib, sys, tempfile
from bench import run
from deploy.procs import RedisServer

workload = sys.argv[1]
work = pathlib.Path(tempfile.mkdtemp())
redis_server = RedisServer(work).start()
try:
    if workload == "churn":
        result = run.storm("ours", work, redis_server.url, run.Progress(1))
        figures = {
            "logins/s": result["loginsPerS"],
            "ms of CPU per cycle": run.per_cycle_ms(result),
        }
    elif workload == "fanout":
        progress = run.Progress(len(run.FANOUT_RATES))
        with run.pair("ours", work, redis_server.url) as servers:
            steps = run.fanout_steps(servers, progress, "ours")
        figures = {"µs of CPU per delivery, 2 instances": run.unsaturated_cpu(steps)}
    elif workload == "held":
        if not hasattr(run, "storm_held"):
            # A revision from before the workload: this checkout's, on its code.
            exec(os.environ["BENCH_HELD_SOURCE"], vars(run))
        result = run.storm_held("ours", work, redis_server.url, run.Progress(1))
        figures = {
            "logins/s": result["loginsPerS"],
            "ms of CPU per cycle": run.per_cycle_ms(result),
        }
    else:
        result = run.recover_once("ours", work, redis_server.url)
        figures = {
            "s until all are back": result.get("recoverS"),
            "others' p99 ms during it": result.get("p99During"),
        }
finally:
    redis_server.stop()
print(json.dumps(figures))
"""
WORKLOADS = ("churn", "fanout", "recover", "held")
# What a worktree borrows from this checkout: built, not tracked.
BORROWED = (".venv", "node_modules", "bench/peer/node_modules", "static/vendor")


def worktree(rev: str, where: Path) -> Path:
    """``rev`` checked out at ``where``, with this checkout's environments."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
        check=True,
        capture_output=True,
    )
    for name in BORROWED:
        target = where / name
        if (ROOT / name).exists() and not target.exists():
            target.symlink_to(ROOT / name)
    return where


def held_source() -> str:
    """``bench.run.storm_held`` and its settings, as source: a revision that
    predates the workload runs this checkout's on its own servers."""
    from bench import run

    return (
        f"HELD_USERS = {run.HELD_USERS}\n"
        f"HELD_STORM_SECONDS = {run.HELD_STORM_SECONDS}\n"
        + inspect.getsource(run.storm_held)
    )


def run_once(tree: Path, workload: str) -> dict:
    """One run of ``workload`` with ``tree``'s code: its figures."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "STORM_SECONDS": os.environ.get("STORM_SECONDS", "20"),
        "BENCH_HELD_SOURCE": held_source(),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, workload],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {workload} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(rev: str, workload: str, runs: int) -> dict:
    """``runs`` runs of each side, alternating: {side: [figures, ...]}."""
    with tempfile.TemporaryDirectory() as scratch:
        other = worktree(rev, Path(scratch) / "rev")
        sides = {rev: other, "this checkout": ROOT}
        results = {side: [] for side in sides}
        try:
            for i in range(runs):
                order = list(sides) if i % 2 == 0 else list(sides)[::-1]
                for side in order:
                    figures = run_once(sides[side], workload)
                    results[side].append(figures)
                    print(f"run {i + 1} {side}: {json.dumps(figures)}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                capture_output=True,
            )
    return results


def report(results: dict) -> str:
    """A markdown table: each figure's runs and median, per side."""
    sides = list(results)
    names = list(results[sides[0]][0])
    lines = [
        "| figure | " + " | ".join(sides) + f" | {sides[1]} / {sides[0]} (medians) |",
        "| --- |" + " ---: |" * (len(sides) + 1),
    ]
    for name in names:
        cells, medians = [], []
        for side in sides:
            values = [r[name] for r in results[side] if r.get(name) is not None]
            middle = statistics.median(values) if values else None
            medians.append(middle)
            runs = ", ".join(f"{v:.3g}" for v in values)
            cells.append(f"{runs} (median {middle:.3g})" if values else "–")
        a, b = medians
        ratio = f"{b / a:.3f}" if a and b is not None else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare this checkout with")
    parser.add_argument("workload", nargs="?", default="churn", choices=WORKLOADS)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(report(compare(args.rev, args.workload, args.runs)))


if __name__ == "__main__":
    main()
