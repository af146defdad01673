"""Against Gradium itself: skipped unless GRADIUM_API_KEY is set (tests never need the network)."""

import os

import pytest
from pipecat.frames.frames import TTSStoppedFrame, TTSTextFrame

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.testing import start_pipeline

pytestmark = pytest.mark.skipif(
    not os.environ.get("GRADIUM_API_KEY"),
    reason="GRADIUM_API_KEY is not set: the real Gradium API is not called",
)


async def test_one_answer_on_real_gradium():
    h = await start_pipeline(GradiumStreamingTTSService(), sample_rate=24000)
    try:
        await h.speak_answer("Hello from the real Gradium service. This is a short check.")
        await h.down.wait_for(lambda: bool(h.down.frames(TTSStoppedFrame)), timeout=30)
    finally:
        await h.stop()
    assert not h.errors()
    assert h.audio_frames() and {f.sample_rate for f in h.audio_frames()} == {24000}
    assert len(h.down.frames(TTSTextFrame)) >= 8


async def test_which_words_gradium_reports_when_it_rewrites():
    """Undocumented: with rewrite_rules, do word reports carry "twenty four" or "24"?

    Talks to Gradium's socket directly (one request), prints which style it uses, and checks
    the service's alignment handles what came back: every source word shown once, in order.
    """
    import json

    from websockets.asyncio.client import connect

    from pipecat_gradium.alignment import WordAligner, source_words
    from pipecat_gradium.emulator.normalize import spoken_words

    text = "Your 24 items cost $1,299.99 and ship at 8:15 on the 21st. "
    url = "wss://api.gradium.ai/api/speech/tts"
    headers = {"x-api-key": os.environ["GRADIUM_API_KEY"]}
    reports: list[str] = []
    async with connect(url, additional_headers=headers) as ws:
        setup = {
            "type": "setup",
            "voice_id": "YTpq7expH9539ERJ",
            "output_format": "pcm_24000",
            "json_config": {"rewrite_rules": "en"},
        }
        await ws.send(json.dumps(setup))
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "text":
                reports.append(msg["text"])
            elif msg["type"] in ("end_of_stream", "error"):
                assert msg["type"] == "end_of_stream", msg
                break
    words = [w.text for w in source_words(text)]
    spoken = [s for w in words for s in spoken_words(w, "en")]
    keys = [r.strip(".,").lower() for r in reports]
    style = "source" if "24" in keys else "spoken" if "twenty" in " ".join(keys) else "other"
    print(f"\nGradium's word reports with rewrite_rules='en' ({style} words): {reports}")
    print(f"the emulator's spoken style would report: {spoken}")
    assert style in ("source", "spoken"), reports
    aligner = WordAligner()
    aligner.add_text(text)
    shown = [w.text for r in reports for w in aligner.add_report(r)]
    assert shown == words


async def test_the_voice_look_up_knows_the_default_voice_and_not_a_made_up_one():
    """The start-up voice check must never call a real catalogue voice unknown."""
    from pipecat_gradium.tts import DEFAULT_URL, DEFAULT_VOICE
    from pipecat_gradium.voices import voice_exists

    key = os.environ["GRADIUM_API_KEY"]
    assert await voice_exists(DEFAULT_URL, key, DEFAULT_VOICE) is True
    assert await voice_exists(DEFAULT_URL, key, "no-such-voice-0000") is False
