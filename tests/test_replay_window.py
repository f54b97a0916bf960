"""A replay owed for a departed instance keeps its window until it has run
(chat.messages.fanout)."""

from __future__ import annotations

import pytest
import redis

from chat.messages import fanout as fanout_module
from chat.messages.fanout import Fanout


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class ReplayLog(Fanout):
    """A fanout whose replays are recorded, and fail while ``failing``."""

    def __init__(self) -> None:
        super().__init__(socketio=None, state=None)
        self.since: list[int] = []
        self.failing = False

    def replay(self, gap_started_ms: int) -> None:
        self.since.append(gap_started_ms)
        if self.failing:
            raise redis.BusyLoadingError("Redis is loading the dataset in memory")


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1_000.0)
    monkeypatch.setattr(fanout_module, "time", clock)
    return clock


def test_a_failed_replay_for_a_departed_instance_is_retried_from_the_same_moment(
    clock,
):
    fanout = ReplayLog()
    fanout.failing = True
    with pytest.raises(redis.BusyLoadingError):
        fanout.instance_gone(5)
    clock.now += 3  # the next heartbeat, still failing
    with pytest.raises(redis.BusyLoadingError):
        fanout.instance_gone(5)
    fanout.failing = False
    clock.now += 3
    fanout.instance_gone(5)
    assert fanout.since == [995_000, 995_000, 995_000]


def test_once_a_replay_ran_the_next_departure_gets_its_own_window(clock):
    fanout = ReplayLog()
    fanout.instance_gone(5)
    clock.now += 60
    fanout.instance_gone(5)
    assert fanout.since == [995_000, 1_055_000]
