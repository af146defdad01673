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
