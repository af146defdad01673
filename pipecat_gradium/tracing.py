"""OpenTelemetry spans, as Pipecat's own TTS services emit them.

``traced_tts`` is Pipecat's decorator: when the pipeline enables tracing (``PipelineWorker(...,
enable_tracing=True)`` with Pipecat's ``tracing`` extra installed), each answer gets one ``tts``
span from its audio context's creation to its ``TTSStoppedFrame``, with the voice, model,
settings, text, character count and TTFB; an interrupted answer's span says so. Without
OpenTelemetry the decorator is a no-op. :func:`note_first_audio` adds this service's own figure,
the time from the answer's first LLM token to its first audio.
"""

from typing import Any

from loguru import logger
from pipecat.utils.tracing.service_decorators import traced_tts

__all__ = ["TTFA_ATTRIBUTE", "note_first_audio", "traced_tts"]

#: Span attribute: seconds from the answer's first LLM token to its first audio.
TTFA_ATTRIBUTE = "metrics.time_to_first_audio"


def note_first_audio(service: Any, context_id: str, ttfa_s: float) -> None:
    """Record an answer's time to first audio on its open ``tts`` span, if it is traced.

    Args:
        service: The TTS service (its spans are kept by Pipecat's ``traced_tts``).
        context_id: The answer's audio context.
        ttfa_s: Seconds from the first LLM token to the first audio.
    """
    if not getattr(service, "_tracing_enabled", False):
        return
    entry = getattr(service, "_tts_spans", {}).get(context_id)
    if entry is None:
        return
    try:
        entry["span"].set_attribute(TTFA_ATTRIBUTE, ttfa_s)
    except Exception as e:  # a tracing fault must never touch the audio path
        logger.warning(f"{service}: could not record time to first audio on its span: {e}")
