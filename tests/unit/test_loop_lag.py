"""Tests for pipecat_gradium.loop_lag: late ticks in a window, and the loop's timer."""

import asyncio
import time

from pipecat_gradium.loop_lag import MANY_USERS, LateTicks, LoopLagMonitor


def test_late_ticks_need_several_within_the_window():
    ticks = LateTicks(late_s=0.05, window_s=2.0, min_late=3)
    ticks.observe(10.0, 0.3)
    ticks.observe(10.5, 0.001)  # on time: not counted
    ticks.observe(11.0, 0.2)
    assert not ticks.loaded(11.0)  # one long block, then another: two, not a load
    ticks.observe(11.5, 0.05)
    assert ticks.loaded(11.5)
    assert ticks.loaded(11.9)
    assert not ticks.loaded(12.0)  # the tick at 10.0 left the window


def test_on_time_ticks_never_load():
    ticks = LateTicks()
    for i in range(1000):
        ticks.observe(i * 0.05, 0.049)
    assert not ticks.loaded(50.0)


async def test_monitor_sees_a_loop_that_runs_late_and_stops_with_its_last_user():
    monitor = LoopLagMonitor(asyncio.get_running_loop(), tick_s=0.01)
    assert not monitor.running and not monitor.loaded
    monitor.acquire()
    monitor.acquire()
    await asyncio.sleep(0.05)
    assert not monitor.loaded  # an idle loop is on time
    for _ in range(3):
        time.sleep(0.08)  # a turn of the loop that takes 80 ms
        await asyncio.sleep(0.02)  # lets the timer see it
    assert monitor.loaded
    monitor.release()
    assert monitor.running  # one user left
    monitor.release()
    assert not monitor.running
    monitor.release()  # an extra release is harmless
    assert not monitor.running


async def test_one_monitor_per_loop():
    assert LoopLagMonitor.for_running_loop() is LoopLagMonitor.for_running_loop()


async def test_a_mild_lag_strains_a_loop_only_when_many_services_share_it():
    monitor = LoopLagMonitor(asyncio.get_running_loop(), tick_s=0.01)

    async def two_mild_turns() -> None:
        for _ in range(2):
            time.sleep(0.035)  # a 35 ms turn: 25-35 ms late, short of loaded's 50 ms
            await asyncio.sleep(0.02)  # lets the timer see it

    for _ in range(MANY_USERS - 1):
        monitor.acquire()
    await two_mild_turns()
    assert not monitor.loaded and not monitor.strained  # a few bots: mild lag is no load
    monitor.acquire()
    await two_mild_turns()
    assert not monitor.loaded
    assert monitor.strained
    for _ in range(MANY_USERS):
        monitor.release()
