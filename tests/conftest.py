"""Shared fixtures: an emulator on 127.0.0.1 with a fast latency model, and a service factory."""

import dataclasses
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


_TUNING_FIELDS = {f.name for f in dataclasses.fields(GradiumStreamingTTSService.Tuning)}


def build_service(emu: GradiumEmulator, **options) -> GradiumStreamingTTSService:
    """A service pointed at the emulator, with Pipecat's audio-context timeout small.

    Args:
        emu: The emulator.
        **options: Constructor options; the fields of ``GradiumStreamingTTSService.Tuning``
            may be given here too and go into its ``tuning``.

    Returns:
        The service.
    """
    tuning = {k: options.pop(k) for k in list(options) if k in _TUNING_FIELDS}
    # A machine busy with other work can make the loop run late, and a late loop lengthens the
    # first phrase: tests of the phrases sent must not depend on the machine's load.
    # tests/service/test_loaded_loop.py runs the loaded path on purpose.
    tuning.setdefault("loaded_first_chunk_words", 0)
    # Likewise the first audio frame's prebuffer under load.
    tuning.setdefault("loaded_prebuffer_s", 0)
    options.setdefault("tuning", GradiumStreamingTTSService.Tuning(**tuning))
    options.setdefault("api_key", "test-key")
    options.setdefault("url", emu.ws_url)
    options.setdefault("stop_frame_timeout_s", 1.0)
    options.setdefault("quiet_flush_s", 0.3)
    return GradiumStreamingTTSService(**options)


@pytest.fixture
def make_tts(emu: GradiumEmulator) -> Callable[..., GradiumStreamingTTSService]:
    """Build a service pointed at the emulator, with every timeout small."""
    return lambda **options: build_service(emu, **options)


def pytest_report_header(config) -> str:
    """Say whether the tests that need Gradium itself will run."""
    if os.environ.get("GRADIUM_API_KEY"):
        return "GRADIUM_API_KEY set: tests against the real Gradium API will run"
    return "GRADIUM_API_KEY not set: tests against the real Gradium API are skipped"
