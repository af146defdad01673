"""Gradium streaming text-to-speech for Pipecat.

``GradiumStreamingTTSService`` is the Pipecat stage; ``pipecat_gradium.emulator`` holds an offline
Gradium-compatible server for tests, demos and benchmarks. The service is imported lazily, so the
emulator can run without loading Pipecat.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ChunkMode",
    "GradiumStreamingTTSService",
    "GradiumStreamingTTSSettings",
    "GradiumStreamingTTSTuning",
    "PhraseAggregator",
]

if TYPE_CHECKING:
    from pipecat_gradium.phrases import ChunkMode, PhraseAggregator
    from pipecat_gradium.settings import GradiumStreamingTTSSettings, GradiumStreamingTTSTuning
    from pipecat_gradium.tts import GradiumStreamingTTSService


def __getattr__(name: str) -> Any:
    if name in ("ChunkMode", "PhraseAggregator"):
        from pipecat_gradium import phrases

        return getattr(phrases, name)
    if name in ("GradiumStreamingTTSSettings", "GradiumStreamingTTSTuning"):
        from pipecat_gradium import settings

        return getattr(settings, name)
    if name == "GradiumStreamingTTSService":
        from pipecat_gradium import tts

        return tts.GradiumStreamingTTSService
    raise AttributeError(f"module 'pipecat_gradium' has no attribute {name!r}")
