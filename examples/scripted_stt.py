"""A stand-in for speech-to-text, for running the phone agent offline (it recognizes no words).

It sits where an STT service sits (between the transport's input and the user aggregator) and
turns every stretch of speech that Silero VAD hears into a final transcript saying how long the
caller spoke, e.g. ``"1.4 seconds of speech"``. The user aggregator writes that transcript to the
context as the caller's turn, so the LLM (or the scripted stand-in) answers it as it would answer
words. Barge-in does not depend on it: VAD alone interrupts the bot.
"""

from pipecat.frames.frames import (
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601


class SpeechLengthTranscriber(FrameProcessor):
    """Transcribes each VAD-detected stretch of speech as its length in seconds."""

    def __init__(self, *, user_id: str = "caller", **kwargs):
        """Create the stand-in.

        Args:
            user_id: The ``user_id`` its transcripts carry.
            **kwargs: Passed to ``FrameProcessor``.
        """
        super().__init__(**kwargs)
        self._user_id = user_id
        self._speech_began: float | None = None
        #: Every transcript pushed, in order.
        self.transcripts: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Note when speech begins and ends (the user aggregator's VAD reports both upstream).

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            # VAD confirms speech start_secs after it began.
            self._speech_began = frame.timestamp - frame.start_secs
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._speech_began is not None:
            seconds = max(0.0, frame.timestamp - frame.stop_secs - self._speech_began)
            self._speech_began = None
            text = f"{seconds:.1f} seconds of speech"
            self.transcripts.append(text)
            await self.push_frame(
                TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True),
                FrameDirection.DOWNSTREAM,
            )
