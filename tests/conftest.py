"""Shared fixtures: an emulator on 127.0.0.1 with a fast latency model, and a service factory."""

import os
from collections.abc import AsyncIterator, Callable

import pytest

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.emulator import GradiumEmulator, LatencyModel

#: Fast but not instant: every stage of the latency model still happens, in milliseconds.
FAST = LatencyModel(handshake_s=0.0, setup_s=0.005, model_delay_s=0.01, lookahead_words=2, speed=20)


@pytest.fixture
async def emu() -> AsyncIterator[GradiumEmulator]:
    """An emulator on a free port of 127.0.0.1 with the fast latency model."""
    async with GradiumEmulator(api_key="test-key", latency=FAST) as emulator:
        yield emulator


@pytest.fixture
def make_tts(emu: GradiumEmulator) -> Callable[..., GradiumStreamingTTSService]:
    """Build a service pointed at the emulator, with every timeout small."""

    def make(**kwargs) -> GradiumStreamingTTSService:
        kwargs.setdefault("api_key", "test-key")
        kwargs.setdefault("url", emu.ws_url)
        kwargs.setdefault("stop_frame_timeout_s", 1.0)
        kwargs.setdefault("quiet_flush_s", 0.3)
        return GradiumStreamingTTSService(**kwargs)

    return make


def pytest_report_header(config) -> str:
    """Say whether the tests that need Gradium itself will run."""
    if os.environ.get("GRADIUM_API_KEY"):
        return "GRADIUM_API_KEY set: tests against the real Gradium API will run"
    return "GRADIUM_API_KEY not set: tests against the real Gradium API are skipped"
