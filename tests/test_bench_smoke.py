"""``BENCH_QUICK=1 make bench`` still runs both servers and writes its report."""

import json
import os
import subprocess
import sys

import pytest

from deploy.procs import ROOT

pytestmark = pytest.mark.e2e


def run_quick(module: str, *args: str, timeout: float = 240, **env: str) -> str:
    """``python -m module args`` in quick mode, with ``env`` added: its output."""
    run = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "BENCH_QUICK": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_quick_benchmark_reports_ours_and_both_peers(tmp_path):
    run_quick("bench.run", BENCH_RESULTS=str(tmp_path))
    [report] = tmp_path.glob("*.json")
    figures = json.loads(report.read_text())["figures"]
    for kind in ("ours", "peer"):
        assert figures[kind]["largest step held"] == 300
        cpu = "CPU µs per delivery, 1 instance"
        [name] = [n for n in figures[kind] if n.startswith(cpu)]
        assert figures[kind][name] > 0
    # The peer doing our work runs every workload that goes through Redis.
    for kind in ("ours", "peer", "equal"):
        assert figures[kind]["logins/s in a churn, 2 instances"] > 0
        [cycle] = [n for n in figures[kind] if n.startswith("server CPU ms per churn")]
        assert figures[kind][cycle] > 0
        # The same churn on instances that hold users of their own.
        [held] = [n for n in figures[kind] if n.endswith("held on each instance")]
        assert figures[kind][held] > 0
        assert figures[kind]["logins/s in that churn"] > 0
        # Every user of the killed instance came back (None: some did not).
        [recover] = [n for n in figures[kind] if n.startswith("s to log in again")]
        assert 0 < figures[kind][recover] < 60
        assert figures[kind]["unaffected users' p99 ms during that storm"] > 0
        assert figures[kind]["deliveries/s at saturation (either topology)"] > 0
        assert figures[kind]["cross-instance p50 ms"] > 0
        cpu = "CPU µs per delivery, 2 instances"
        [name] = [n for n in figures[kind] if n.startswith(cpu)]
        assert figures[kind][name] > 0
    # One Redis and a Redis Cluster, measured in alternating rounds.
    ab = [n for n in figures["ours"] if n.startswith("A/B")]
    assert len(ab) == 2 and all(figures["ours"][n] > 0 for n in ab)
    table = report.with_suffix(".md").read_text()
    assert "| ours / peer | peer doing our work | ours / it |" in table
    assert report.with_suffix(".png").stat().st_size > 10_000


def test_quick_scale_model_delivers_everything_and_reports(tmp_path):
    run_quick("bench.scale", BENCH_RESULTS=str(tmp_path))
    [report] = tmp_path.glob("scale-*.json")
    rows = json.loads(report.read_text())["rows"]
    assert [r["instances"] for r in rows] == [1, 2]
    assert all(r["complete"] == 1 and r["deliveries"] > 0 for r in rows)
    assert "| instances | CPU µs / delivery |" in report.with_suffix(".md").read_text()


def worktrees() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.splitlines()


def test_ab_runs_a_revision_and_this_checkout_in_turn_and_cleans_up():
    """``python -m bench.ab REV``: both sides run, alternating which goes
    first, each run's figures and the medians are printed, and REV's
    scratch worktree is gone after."""
    before = worktrees()
    output = run_quick(
        "bench.ab", "HEAD", "churn", "--runs", "2", timeout=300, STORM_SECONDS="2"
    )
    runs = [line for line in output.splitlines() if line.startswith("run ")]
    assert [line.split(":")[0] for line in runs] == [
        "run 1 HEAD",
        "run 1 this checkout",
        "run 2 this checkout",
        "run 2 HEAD",
    ]
    for line in runs:
        figures = json.loads(line.split(": ", 1)[1])
        assert figures["logins/s"] > 0 and figures["ms of CPU per cycle"] > 0
    assert "| logins/s |" in output and "(medians) |" in output
    assert worktrees() == before
