"""Every private Pipecat member the plugin relies on, in one place, checked.

Pipecat's TTS base class does most of what a TTS service needs (audio contexts, word timestamps,
the context's text, metrics, events), but the hooks this plugin needs are private, and a Pipecat
minor release may rename them. They are listed here: :func:`missing_members` names the ones a
Pipecat release lacks (the service logs them once at construction, and a test fails naming them),
and where Pipecat's own behaviour is an acceptable fallback the plugin uses it instead of failing.
"""

from typing import Any, cast

from pipecat.frames.frames import AggregatedTextProgressFrame, TTSTextFrame
from pipecat.services.tts_service import TTSService, WebsocketTTSService
from pipecat.utils.base_object import BaseObject
from pipecat.utils.context.audio_context_manager import AudioContextManager

# The class the service extends: its members come from TTSService and WebsocketService.
_Base = WebsocketTTSService

__all__ = [
    "OVERRIDDEN_METHODS",
    "USED_ATTRIBUTES",
    "USED_METHODS",
    "complete_without_words",
    "missing_members",
]

#: Private methods the service overrides: a rename would silently bypass the override.
OVERRIDDEN_METHODS: tuple[tuple[type, str], ...] = (
    (_Base, "_start_audio_context"),  # no audio context for an answer that cannot speak
    (_Base, "_next_audio_context_item"),  # read items without a task each (playback.py)
    (_Base, "_register_spoken_text"),  # complete a cut answer's slots at once
    (_Base, "_apply_force_complete"),  # a cut answer keeps only the words heard
    (_Base, "_record_context_audio_outcome"),  # one error per answer, not two
    (_Base, "_handle_interruption"),  # close the sockets still generating
    (_Base, "_update_settings"),  # reject out-of-range settings, keep the old ones
    (_Base, "_disconnect"),  # close the sockets on stop, cancel and cleanup
    (_Base, "_connect_websocket"),
    (_Base, "_disconnect_websocket"),
    (_Base, "_receive_messages"),
)

#: Private methods the service calls.
USED_METHODS: tuple[tuple[type, str], ...] = (
    (_Base, "_handle_aggregated_text"),  # speak held text at a quiet flush and at stop
    (_Base, "_aggregated_text_frame"),
    (_Base, "_push_word_frames"),  # a cut answer's slots, without its unheard words
    (_Base, "_refresh_audio_context"),  # keep an answer's context open while audio is owed
    (_Base, "_websocket_connect"),  # Pipecat's connect (its headers, its proxy)
    (AudioContextManager, "keepalive"),
    (BaseObject, "_call_event_handler"),  # on_connected, on_disconnected, on_connection_error
)

#: Private attributes of a constructed ``TTSService`` the service reads or sets.
USED_ATTRIBUTES: tuple[str, ...] = (
    "_turn_context_id",  # the LLM turn's context id
    "_tts_contexts",  # TTSSpeakFrame contexts (registered before their turn starts)
    "_text_aggregator",  # replaced by the PhraseAggregator
    "_aggregated_frame_sequencer",  # its force_complete, for a cut answer
    "_word_timestamp_tracker",  # its last_pts, for a cut answer
    "_audio_context_manager",  # its _contexts and _KEEPALIVE, read by playback.py
    "_stop_frame_timeout_s",
    "_settings",
)


def missing_members(service: TTSService) -> list[str]:
    """Name every private Pipecat member listed here that this Pipecat lacks.

    Args:
        service: A constructed service (its attributes are checked on it).

    Returns:
        ``"Class.member"`` for each missing one; empty when all are there.
    """
    missing = [
        f"{cls.__name__}.{name}"
        for cls, name in (*OVERRIDDEN_METHODS, *USED_METHODS)
        if not callable(getattr(cls, name, None))
    ]
    missing += [f"TTSService.{name}" for name in USED_ATTRIBUTES if not hasattr(service, name)]
    sequencer = getattr(service, "_aggregated_frame_sequencer", None)
    if sequencer is not None and not callable(getattr(sequencer, "force_complete", None)):
        missing.append("AggregatedFrameSequencer.force_complete")
    tracker = getattr(service, "_word_timestamp_tracker", None)
    if tracker is not None and not hasattr(tracker, "last_pts"):
        missing.append("WordTimestampTracker.last_pts")
    return missing


async def complete_without_words(service: TTSService, context_id: str) -> bool:
    """Complete an answer's text slots without the word frames of its unspoken text.

    Pipecat's ``_apply_force_complete`` writes an answer's unspoken text as spoken at its end
    (for services that drop word timestamps); for an answer cut by a fault that would put words
    nobody heard into the context.

    Args:
        service: The service.
        context_id: The cut answer.

    Returns:
        Whether it was done; False when this Pipecat is laid out differently (the caller then
        falls back to Pipecat's own completion).
    """
    sequencer: Any = getattr(service, "_aggregated_frame_sequencer", None)
    tracker: Any = getattr(service, "_word_timestamp_tracker", None)
    push: Any = getattr(service, "_push_word_frames", None)
    force_complete: Any = getattr(sequencer, "force_complete", None)
    if not (callable(force_complete) and callable(push) and hasattr(tracker, "last_pts")):
        return False
    frames: list[Any] = cast(Any, force_complete)(context_id, tracker.last_pts)
    await cast(Any, push)(
        [f for f in frames if not isinstance(f, (TTSTextFrame, AggregatedTextProgressFrame))]
    )
    return True
