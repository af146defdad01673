"""Pipecat's private members the plugin relies on: all present, and named when one is not."""

import pytest
from loguru import logger
from pipecat.services.tts_service import TTSService

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.pipecat_compat import (
    OVERRIDDEN_METHODS,
    USED_METHODS,
    complete_without_words,
    missing_members,
)


def make_service() -> GradiumStreamingTTSService:
    return GradiumStreamingTTSService(api_key="k", url="ws://127.0.0.1:9/api/speech/tts")


def test_this_pipecat_has_every_private_member_the_plugin_uses():
    missing = missing_members(make_service())
    assert missing == [], (
        f"Pipecat changed: {', '.join(missing)} no longer exist; update "
        "pipecat_gradium/pipecat_compat.py and the code that uses them"
    )


def test_every_overridden_pipecat_method_is_overridden_by_the_service():
    # A listed override the service does not define would be a stale entry.
    for cls, name in OVERRIDDEN_METHODS:
        assert name in vars(GradiumStreamingTTSService), f"{cls.__name__}.{name}"
    assert not {name for _, name in OVERRIDDEN_METHODS} & {name for _, name in USED_METHODS}


def test_a_renamed_member_is_named_at_construction(monkeypatch):
    monkeypatch.delattr(TTSService, "_refresh_audio_context")
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        service = make_service()
    finally:
        logger.remove(sink)
    assert missing_members(service) == ["WebsocketTTSService._refresh_audio_context"]
    assert any("WebsocketTTSService._refresh_audio_context" in line for line in lines)


async def test_a_pipecat_without_the_sequencer_falls_back_to_its_own_completion():
    service = make_service()
    del service._aggregated_frame_sequencer
    assert await complete_without_words(service, "ctx") is False
    assert "TTSService._aggregated_frame_sequencer" in missing_members(service)


@pytest.mark.parametrize("name", [n for _, n in OVERRIDDEN_METHODS + USED_METHODS])
def test_each_listed_method_exists_on_its_class(name):
    cls = dict((n, c) for c, n in OVERRIDDEN_METHODS + USED_METHODS)[name]
    assert callable(getattr(cls, name, None)), f"Pipecat's {cls.__name__}.{name} is gone"
