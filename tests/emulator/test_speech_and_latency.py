"""The audio is speech with word timings, and the latency model does what it says."""

from __future__ import annotations

import ast
import pathlib

import pytest

from pipecat_gradium import emulator as emulator_pkg
from pipecat_gradium.emulator import GradiumEmulator, LatencyModel

from .conftest import KEY, open_ws, pcm16, read_until_closed, rms, send, speak

pytestmark = pytest.mark.timeout(20)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Your order of $3.50 ships on 12/05 to Paris 😀 today.",
    "Well, that's it: thank you - goodbye!",
]


@pytest.mark.parametrize("text", TEXTS)
async def test_audio_is_speech_with_one_text_message_per_word(
    emu: GradiumEmulator, text: str
) -> None:
    """Speech band: RMS above 1000 (silence is 0), 0.15 to 0.8 s of audio per source word.

    Every whitespace-separated source word gets exactly one text message, in order, with
    strictly rising start times inside the audio.
    """
    msgs = await speak(emu, [text])
    samples = pcm16(msgs)
    duration = samples.size / 16000
    n_words = len(text.split())
    assert rms(samples) > 1000
    assert 0.15 * n_words <= duration <= 0.8 * n_words
    texts = [m for m in msgs if m["type"] == "text"]
    assert [m["text"] for m in texts] == text.split()
    starts = [m["start_s"] for m in texts]
    assert all(a < b for a, b in zip(starts, starts[1:]))
    assert all(0 <= m["start_s"] < m["stop_s"] <= duration + 1e-6 for m in texts)


async def test_lookahead_holds_last_words_until_eos(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm_16000")
    await send(ws, type="text", text="alpha beta gamma delta ")
    await emu.stats.wait_for(lambda s: bool(s.requests) and len(s.requests[0].words) == 2)
    assert [w for w, _, _ in emu.stats.requests[0].words] == ["alpha", "beta"]
    await send(ws, type="end_of_stream")
    await read_until_closed(ws)
    assert [w for w, _, _ in emu.stats.requests[0].words] == ["alpha", "beta", "gamma", "delta"]


async def test_partial_word_is_spoken_at_eos(emu: GradiumEmulator) -> None:
    msgs = await speak(emu, ["Partial wor", "d"])
    assert [m["text"] for m in msgs if m["type"] == "text"] == ["Partial", "word"]


async def test_setup_and_model_delays() -> None:
    latency = LatencyModel(handshake_s=0.05, setup_s=0.1, model_delay_s=0.2, speed=20.0)
    async with GradiumEmulator(KEY, latency=latency) as emu:
        await speak(emu, ["Timing check."])
        req = emu.stats.requests[0]
        conn = emu.stats.connections[0]
        assert req.ready_at is not None and req.first_audio_at is not None
        assert req.setup_at - conn.opened_at >= 0.05
        assert 0.1 <= req.ready_at - req.setup_at < 0.3
        # First speakable word: end_of_stream here (two words, look-ahead 2).
        assert req.eos_at is not None and 0.2 <= req.first_audio_at - req.eos_at < 0.4


async def test_speed_paces_chunks() -> None:
    async with GradiumEmulator(KEY, latency=LatencyModel.instant()) as emu:
        emu.latency = LatencyModel(0.0, 0.0, 0.0, 2, speed=4.0)
        await speak(emu, ["Pacing at four times real time."])
        chunks = emu.stats.requests[0].audio_chunks
        span = chunks[-1][0] - chunks[0][0]
        expected = (len(chunks) - 1) * 0.08 / 4.0
        assert expected * 0.9 <= span <= expected * 1.5 + 0.05


def test_latency_model_defaults_and_instant() -> None:
    d = LatencyModel()
    assert (d.handshake_s, d.setup_s, d.model_delay_s, d.lookahead_words, d.speed) == (
        0.1,
        0.05,
        0.15,
        2,
        2.0,
    )
    i = LatencyModel.instant()
    assert max(i.handshake_s, i.setup_s, i.model_delay_s) <= 0.005
    assert i.lookahead_words == 2 and i.speed >= 50
    with pytest.raises(ValueError):
        LatencyModel(speed=0)


def test_emulator_never_imports_pipecat_or_the_service() -> None:
    root = pathlib.Path(emulator_pkg.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("pipecat"), f"{path.name} imports {name}"
