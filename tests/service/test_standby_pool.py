"""The process-wide standby pool: services with the same URL and key share standby sockets."""

import asyncio
import time

from pipecat.frames.frames import InterruptionFrame

from pipecat_gradium.emulator import GradiumEmulator
from pipecat_gradium.sockets import StandbyPool
from pipecat_gradium.testing import start_pipeline
from tests.conftest import FAST


def shared_standby(emu: GradiumEmulator, key: str = "test-key") -> StandbyPool:
    """The standby pool the services talking to ``emu`` with ``key`` share."""
    return StandbyPool.for_key(StandbyPool.sharing_key(emu.ws_url, key))


ANSWER = "Sure thing. The forecast for tomorrow is sunny, with a light breeze from the west."
LONG = (
    "Let me walk you through the whole plan. First we pack the car early in the morning, "
    "then we drive north along the coast for about three hours, stopping twice for coffee."
)


async def until(predicate, timeout: float = 5.0) -> None:
    """Poll a client-side condition no event announces (a handshake completing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition still false"
        await asyncio.sleep(0.01)


def standby_tasks() -> list[asyncio.Task]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_name().startswith(("gradium-standby", "gradium-close"))
    ]


async def test_two_services_share_standby_and_a_barge_in_closes_only_its_own_socket(
    emu: GradiumEmulator, make_tts
):
    a_tts, b_tts = make_tts(), make_tts()
    a = await start_pipeline(a_tts)
    b = await start_pipeline(b_tts)
    try:
        shared = shared_standby(emu)
        assert shared.members == 2
        await until(lambda: len(shared.idle) == 2)
        await asyncio.sleep(0.2)  # the passage of time is the scenario: no more sockets open
        # Two active sockets and one shared standby of 2, not 2 x (1 + 2).
        assert len(emu.stats.connections) == 4 and len(shared.idle) == 2

        hold = emu.hold_after_chunks(3)
        await a.speak_answer(LONG)
        await b.speak_answer(ANSWER)
        await asyncio.wait_for(hold.reached.wait(), 10)
        a_first = next(r for r in emu.stats.requests if r.text.startswith("Let"))
        interrupted_at = time.monotonic()
        await a.send(InterruptionFrame())
        await emu.stats.wait_for(
            lambda s: s.connections[a_first.connection_id - 1].closed_by == "client", timeout=5
        )
        hold.release()
        await b.down.wait_for(lambda: b.stopped() >= 1, timeout=15)
        await a.speak_answer(ANSWER)
        await a.down.wait_for(lambda: a.stopped() >= 1, timeout=15)
    finally:
        await a.stop()
        await b.stop()
    b_req = next(r for r in emu.stats.requests if r.text.startswith("Sure") and r.finished)
    assert b_req.connection_id != a_first.connection_id
    # B's socket outlived A's barge-in and served B's answer to the end.
    assert emu.stats.connections[b_req.connection_id - 1].closed_by == "client"
    assert b_req.words and b.words_out() == ANSWER.split()
    # A's next answer went out on a socket from the shared standby (no handshake).
    a_next = emu.stats.requests[-1]
    assert a_next.connection_id not in (a_first.connection_id, b_req.connection_id)
    assert a_next.finished
    assert emu.stats.connections[a_next.connection_id - 1].opened_at < interrupted_at
    assert not a.errors() and not b.errors()


async def test_different_key_or_url_never_share(emu: GradiumEmulator, make_tts):
    async with GradiumEmulator(api_key="other-key", latency=FAST) as other:
        short_url = emu.ws_url.replace("/api/speech/tts", "/speech/tts")
        services = [
            make_tts(),
            make_tts(api_key="other-key", url=other.ws_url),
            make_tts(url=short_url),
        ]
        harnesses = [await start_pipeline(s) for s in services]
        try:
            keys = [
                StandbyPool.sharing_key(emu.ws_url, "test-key"),
                StandbyPool.sharing_key(other.ws_url, "other-key"),
                StandbyPool.sharing_key(short_url, "test-key"),
            ]
            pools = [StandbyPool.for_key(k) for k in keys]
            assert len({id(p) for p in pools}) == 3
            assert all(p.members == 1 for p in pools)
            assert StandbyPool.sharing_key(emu.ws_url, "test-key") != StandbyPool.sharing_key(
                emu.ws_url, "other-key"
            )
            await harnesses[1].speak_answer(ANSWER)
            await harnesses[1].down.wait_for(lambda: harnesses[1].stopped() >= 1, timeout=15)
        finally:
            for h in harnesses:
                await h.stop()
        assert all(not h.errors() for h in harnesses)
        assert other.stats.requests and other.stats.requests[0].finished


async def test_nothing_is_left_open_when_the_last_service_stops(emu: GradiumEmulator, make_tts):
    a_tts, b_tts = make_tts(), make_tts()
    a = await start_pipeline(a_tts)
    b = await start_pipeline(b_tts)
    shared = shared_standby(emu)
    assert shared.members == 2
    await until(lambda: len(shared.idle) == 2)
    await a.stop()
    # One member left: the standby stays for the other.
    assert shared.members == 1 and shared.idle
    await b.stop()
    assert shared.members == 0 and not shared.idle
    await emu.stats.wait_for(
        lambda s: all(c.closed_by == "client" for c in s.connections), timeout=5
    )
    assert not standby_tasks()
    assert StandbyPool.for_key(StandbyPool.sharing_key(emu.ws_url, "test-key")) is not shared


async def test_size_follows_the_rate_of_takes_not_the_number_of_services():
    pool = StandbyPool(("ws://nowhere", "k"), rate_window_s=10.0)
    for i in range(100):
        pool.join(i, size=2, max_age_s=240.0, connect=None)  # type: ignore[arg-type]
    assert pool.size == 2  # a hundred quiet services: still two
    for _ in range(50):  # 5 barge-ins a second over the window...
        pool.take()
    # ...with 0.1 s handshakes: 5/s x 2 x 0.1 s = one more socket.
    assert pool.size == 3
    for _ in range(950):
        pool.take()
    assert pool.size == 2 + 20
