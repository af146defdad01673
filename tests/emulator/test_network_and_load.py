"""The emulator's network model (seeded jitter, stalls, handshake variance) and load voice."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from pipecat_gradium.emulator import GradiumEmulator, LatencyModel, voice
from pipecat_gradium.emulator.latency import DelayLine

from .conftest import KEY, open_ws, send, speak, words_of

JITTER = LatencyModel.instant().with_jitter(seed=7)


def test_same_seed_same_delays_and_streams_differ() -> None:
    rng1, rng2 = JITTER.rng(3, "down"), JITTER.rng(3, "down")
    first = [JITTER.message_delay(rng1) for _ in range(500)]
    assert first == [JITTER.message_delay(rng2) for _ in range(500)]
    other = JITTER.rng(3, "up")
    assert first != [JITTER.message_delay(other) for _ in range(500)]
    reseeded = JITTER.with_jitter(seed=8)
    rng3 = reseeded.rng(3, "down")
    assert first != [reseeded.message_delay(rng3) for _ in range(500)]


def test_delay_distribution_is_the_stated_one() -> None:
    rng = JITTER.rng("distribution")
    delays = [JITTER.message_delay(rng) for _ in range(20000)]
    plain = [d for d in delays if d < 0.1]
    stalls = [d for d in delays if d >= 0.1]
    # 40 ms ± 20 ms uniformly, and 1 % of messages held 200 ms more.
    assert min(plain) >= 0.02 and max(plain) <= 0.06
    assert sum(plain) / len(plain) == pytest.approx(0.04, abs=0.001)
    assert all(0.22 <= d <= 0.26 for d in stalls)
    assert 0.007 <= len(stalls) / len(delays) <= 0.013
    hs = [JITTER.handshake_delay(rng) for _ in range(2000)]
    assert min(hs) >= 0.0 and max(hs) <= 0.05 and max(hs) - min(hs) > 0.04
    assert LatencyModel().message_delay(rng) == 0.0 and not LatencyModel().has_network


async def test_delay_line_keeps_order_and_holds_each_message() -> None:
    got: list[tuple[int, float]] = []

    async def deliver(i: int) -> None:
        got.append((i, time.monotonic()))

    line: DelayLine[int] = DelayLine(
        JITTER.with_jitter(stall_probability=0.2), JITTER.rng(), deliver
    )
    due = [line.put(i) for i in range(40)]
    await asyncio.wait_for(line.drain(), 5)
    await line.close()
    assert [i for i, _ in got] == list(range(40))
    assert due == sorted(due)  # a stall holds up what follows it
    assert all(at >= d - 0.002 for (_, at), d in zip(got, due, strict=True))


async def test_jittered_emulator_delivers_everything_late_and_in_order() -> None:
    text = ["Jitter keeps every word in order."]
    async with GradiumEmulator(KEY, latency=LatencyModel.instant()) as plain:
        reference = await speak(plain, text, client_req_id="r")
    async with GradiumEmulator(KEY, latency=JITTER) as emu:
        ws = await open_ws(emu)
        await send(ws, type="setup", output_format="pcm_16000", client_req_id="r")
        sent_at = time.monotonic()
        await send(ws, type="text", text=text[0], client_req_id="r")
        await send(ws, type="end_of_stream", client_req_id="r")
        msgs, first_audio_at = [], None
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "audio" and first_audio_at is None:
                first_audio_at = time.monotonic()
            msgs.append(msg)
        req = emu.stats.requests[0]
    assert [m["type"] for m in msgs] == [m["type"] for m in reference]
    assert words_of(msgs) == words_of(reference)
    assert ws.close_code == 1000  # end_of_stream arrived before the close
    # Uplink: the text reached the server at least 20 ms after it was sent...
    assert req.text_times[0] - sent_at >= 0.02
    # ...and downlink: the first audio reached the client at least 20 ms after it left.
    assert req.first_audio_at is not None and first_audio_at is not None
    assert first_audio_at - req.first_audio_at >= 0.02


async def test_voice_cache_keeps_word_timing_and_skips_synthesis() -> None:
    latency = LatencyModel.instant()
    latency.voice_cache = True
    async with GradiumEmulator(KEY, latency=latency) as emu:
        msgs = await speak(emu, ["Cached words keep their timing."])
        assert voice.cached_word("timing.", 175, 16000) is not None
        again = await speak(emu, ["Cached words keep their timing."])
    words = [m for m in msgs if m["type"] == "text"]
    assert [w["text"] for w in words] == "Cached words keep their timing.".split()
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts) and all(w["stop_s"] > w["start_s"] for w in words)
    audio_s = max(m["stop_s"] for m in msgs if m["type"] == "audio")
    assert words[-1]["stop_s"] <= audio_s
    # The same text gives the same audio and timings from the cache.
    assert [m.get("audio") for m in again] == [m.get("audio") for m in msgs]


async def test_deflate_can_be_refused() -> None:
    async with GradiumEmulator(KEY, latency=LatencyModel.instant()) as emu:
        ws = await open_ws(emu)
        assert ws.response is not None and "permessage-deflate" in str(ws.response.headers)
        await ws.close()
        emu.latency = LatencyModel.from_dict({"deflate": False}, base=emu.latency)
        ws = await open_ws(emu)
        assert ws.response is not None
        assert "permessage-deflate" not in str(ws.response.headers)
        await ws.close()
