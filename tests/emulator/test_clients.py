"""Gradium's own SDK and Pipecat's built-in Gradium service, unchanged, against the emulator."""

from __future__ import annotations

import asyncio

import pytest
from gradium.client import GradiumClient

from pipecat_gradium.emulator import GradiumEmulator

from .conftest import KEY, rms

pytestmark = pytest.mark.timeout(30)

PHRASES = ["Hello there, ", "thanks for calling. ", "How can I ", "help you today? "]


async def test_sdk_realtime_llm_to_tts_recipe(emu: GradiumEmulator) -> None:
    client = GradiumClient(base_url=emu.base_url, api_key=KEY)
    audio = bytearray()
    words: list[str] = []
    async with client.tts_realtime(model_name="default", output_format="pcm_24000") as tts:

        async def send_loop() -> None:
            for phrase in PHRASES:
                await tts.send_text(phrase)
            await tts.send_text("<flush>")
            await tts.send_eos()

        async def recv_loop() -> None:
            async for msg in tts:
                if msg["type"] == "audio":
                    audio.extend(msg["audio"])
                elif msg["type"] == "text":
                    words.append(msg["text"])
                elif msg["type"] == "end_of_stream":
                    return

        async with asyncio.TaskGroup() as tg:
            tg.create_task(send_loop())
            tg.create_task(recv_loop())
        assert tts.ready["sample_rate"] == 24000
    assert words == "".join(PHRASES).split()
    import numpy as np

    samples = np.frombuffer(bytes(audio), dtype="<i2")
    assert rms(samples) > 1000
    assert emu.stats.requests[0].texts == [*PHRASES, "<flush>"]


async def test_sdk_one_shot_tts_returns_when_server_closes(emu: GradiumEmulator) -> None:
    client = GradiumClient(base_url=emu.base_url, api_key=KEY)
    result = await asyncio.wait_for(
        client.tts({"output_format": "pcm_16000"}, "One shot synthesis works."), 10
    )
    assert result.sample_rate == 16000
    assert [t.text for t in result.text_with_timestamps] == ["One", "shot", "synthesis", "works."]
    assert rms(result.pcm16()) > 1000
    assert emu.stats.connections[0].closed_by == "server"
    assert emu.stats.connections[0].close_code == 1000


async def test_sdk_one_shot_wav(emu: GradiumEmulator) -> None:
    client = GradiumClient(base_url=emu.base_url, api_key=KEY)
    result = await client.tts({"output_format": "wav"}, "A wave file.")
    assert result.raw_data[:4] == b"RIFF"


async def test_pipecat_builtin_gradium_service(emu: GradiumEmulator) -> None:
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame, TTSTextFrame
    from pipecat.services.gradium.tts import GradiumTTSService
    from pipecat.tests.utils import run_test

    tts = GradiumTTSService(api_key=KEY, url=emu.ws_url)
    text = "Hello from the Pipecat pipeline."
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(text)])
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert audio and all(f.sample_rate == 48000 for f in audio)
    assert sum(len(f.audio) for f in audio) / 2 / 48000 > 1.0
    assert words == text.split()
    req = emu.stats.requests[0]
    assert req.setup["close_ws_on_eos"] is False and req.client_req_id
    assert req.finished
