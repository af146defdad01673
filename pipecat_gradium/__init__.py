"""Gradium streaming text-to-speech for Pipecat.

``GradiumStreamingTTSService`` is the Pipecat stage; ``pipecat_gradium.emulator`` holds an offline
Gradium-compatible server for tests, demos and benchmarks.
"""

from pipecat_gradium.phrases import ChunkMode, PhraseAggregator
from pipecat_gradium.tts import GradiumStreamingTTSService, GradiumStreamingTTSSettings

__version__ = "0.1.0"

__all__ = [
    "ChunkMode",
    "GradiumStreamingTTSService",
    "GradiumStreamingTTSSettings",
    "PhraseAggregator",
]
