"""The service's settings: what Gradium is asked for, and the limits most bots never change.

``GradiumStreamingTTSSettings`` follows Pipecat's ``TTSSettings`` (updatable at run time with
``TTSUpdateSettingsFrame``); ``GradiumStreamingTTSTuning`` groups the timeouts, back-offs and sizes,
one default each, that tests turn small.
"""

from dataclasses import dataclass, field

from pipecat.services.settings import TTSSettings
from pipecat.utils.types import NOT_GIVEN, NotGiven

from pipecat_gradium.batching import DEFAULT_BATCH_S


@dataclass
class GradiumStreamingTTSSettings(TTSSettings):
    """Runtime-updatable settings; a change applies from the next request, on the same socket.

    Parameters:
        temp: Sampling temperature, 0.0 to 1.4 (Gradium's default 0.7).
        cfg_coef: Voice similarity, 1.0 to 4.0 (default 2.0).
        padding_bonus: Speaking speed, -4.0 to 4.0: negative speaks faster, positive slower.
        rewrite_rules: Text normalisation, e.g. ``"en"`` or ``"TimeEn,Date"``. When unset,
            ``language`` (en, fr, de, es, pt) is used as the rule set.
        pronunciation_id: A Gradium pronunciation dictionary.
    """

    temp: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    cfg_coef: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    padding_bonus: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    rewrite_rules: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pronunciation_id: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


@dataclass(frozen=True)
class GradiumStreamingTTSTuning:
    """Limits most bots never change, in one place; tests turn the timeouts small.

    Parameters:
        max_chunk_chars: Longest text message sent to Gradium (cut between words).
        flush_after_first_chunk: Send one ``<flush>`` after an answer's first phrase, so
            Gradium does not hold its last words back while the LLM produces the next ones.
        max_socket_age_s: A socket this old takes no new request (Gradium ends sessions at
            300 s).
        connect_timeout_s: Limit on one WebSocket handshake.
        first_audio_timeout_s: Longest wait for an answer's first audio once Gradium owes it
            (a cold start); past it the answer ends with one error.
        stall_timeout_s: Once audio flows, longest silence while Gradium owes words already
            flushed (or the answer's end); past it the request counts as lost and the answer
            goes on from the first unheard word on a fresh socket. While the pipeline ends
            (``EndFrame``), no audio is waited for longer than this.
        retry_for_s: Sent in every setup: how long Gradium may retry allocating a worker
            before it fails the request (its window for brief worker shortages).
        limit_wait_s: Longest an answer waits for a free session when the account's plan
            concurrency limit is reached, retrying with back-off.
        probe_backoff_s: First wait before probing an unreachable Gradium again.
        probe_backoff_max_s: Longest wait between probes (doubling from the first).
        audio_batch_s: While Gradium is more than 0.5 s ahead of playback, its 80 ms chunks
            are merged into frames of up to this long (every frame costs the pipeline the same
            CPU, whatever its length); 0 pushes each chunk as it arrives.
        loaded_first_chunk_words: While the process's event loop runs late (many bots in one
            process, or a bot short of CPU: see :mod:`pipecat_gradium.loop_lag`), an answer's
            first phrase waits for this many words (or a sentence's end), so its audio lasts
            through the burst of LLM tokens that slows the loop: first audio comes a little
            later, the audio after it without gaps. 0 keeps ``first_chunk_words`` always.
        low_buffer_flush_s: Once an answer's audio plays, when what Gradium sent would run out
            within this long while it still holds back words already sent (it reads a few words
            ahead and waits for more text), send ``<flush>`` so it speaks them: the next
            phrase is late (a slow LLM, a loaded event loop) and a gap is near. 0 turns it off.
        loaded_prebuffer_s: While the process's event loop runs late (with many services in
            the process, as soon as it begins to: ``LoopLagMonitor.strained``), an answer's
            first audio frame gathers this much audio (or what came within as long after the
            first chunk, or the whole answer if shorter) before it goes to playback, its
            words' text frames waiting with it, so a long turn of the loop right after the
            first frame is not heard as a stutter. First audio comes up to that much later
            under load (about half of it, at Gradium's faster-than-real-time pace); unloaded
            nothing changes. 0 turns it off.
    """

    max_chunk_chars: int = 80
    flush_after_first_chunk: bool = True
    max_socket_age_s: float = 240.0
    connect_timeout_s: float = 10.0
    first_audio_timeout_s: float = 10.0
    stall_timeout_s: float = 3.0
    retry_for_s: float = 2.0
    limit_wait_s: float = 10.0
    probe_backoff_s: float = 0.5
    probe_backoff_max_s: float = 5.0
    audio_batch_s: float = DEFAULT_BATCH_S
    loaded_first_chunk_words: int = 8
    low_buffer_flush_s: float = 0.4
    loaded_prebuffer_s: float = 0.3

    def __post_init__(self) -> None:
        """Reject values that would make the service hang or spin.

        Raises:
            ValueError: If a timeout or back-off is not positive, or a size is negative.
        """
        positive = {
            "connect_timeout_s": self.connect_timeout_s,
            "first_audio_timeout_s": self.first_audio_timeout_s,
            "stall_timeout_s": self.stall_timeout_s,
            "limit_wait_s": self.limit_wait_s,
            "probe_backoff_s": self.probe_backoff_s,
            "probe_backoff_max_s": self.probe_backoff_max_s,
            "max_socket_age_s": self.max_socket_age_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"GradiumStreamingTTSService.Tuning: {name} must be > 0")
        if self.max_chunk_chars < 1:
            raise ValueError("GradiumStreamingTTSService.Tuning: max_chunk_chars must be >= 1")
        not_negative = {
            "audio_batch_s": self.audio_batch_s,
            "retry_for_s": self.retry_for_s,
            "loaded_first_chunk_words": self.loaded_first_chunk_words,
            "low_buffer_flush_s": self.low_buffer_flush_s,
            "loaded_prebuffer_s": self.loaded_prebuffer_s,
        }
        for name, value in not_negative.items():
            if value < 0:
                raise ValueError(
                    f"GradiumStreamingTTSService.Tuning: {name} must be >= 0 (0 turns it off)"
                )
