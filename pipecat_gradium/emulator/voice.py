"""The emulator's voice: eSpeak NG through its C API, loaded from the `espeakng-loader` wheel.

eSpeak NG is one engine per process and is not re-entrant, so every call goes through one
lock; callers run :func:`synthesize` in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: eSpeak NG always synthesizes at this rate.
ESPEAK_RATE = 22050

# Constants from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_DEFAULT_WPM = 175


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class VoiceUnavailableError(RuntimeError):
    """Raised when eSpeak NG cannot be loaded (the ``emulator`` extra is not installed)."""


@dataclass
class WordEvent:
    """One eSpeak word event.

    Attributes:
        char_start: Index (from 0) of the event's first character in the synthesized text.
        char_len: Number of characters the event covers.
        sample: Sample index (at 22050 Hz) where the word starts.
    """

    char_start: int
    char_len: int
    sample: int


@dataclass
class Synthesis:
    """Result of one synthesis call.

    Attributes:
        samples: Mono int16 samples at :data:`ESPEAK_RATE`.
        words: Word events, in the order eSpeak produced them.
        aborted: True when the ``should_stop`` callback cut synthesis short.
    """

    samples: np.ndarray
    words: list[WordEvent] = field(default_factory=list)
    aborted: bool = False


class _Engine:
    """The process-wide eSpeak NG engine (loaded on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: Any = None
        self._callback: Any = None
        # State of the call in progress (guarded by the lock).
        self._chunks: list[np.ndarray] = []
        self._words: list[WordEvent] = []
        self._samples_seen = 0
        self._should_stop: Callable[[], bool] | None = None
        self._aborted = False

    def _load(self) -> None:
        try:
            import espeakng_loader  # imported lazily: the voice is an optional extra
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise VoiceUnavailableError(
                "The Gradium emulator's voice needs eSpeak NG: "
                "pip install 'pipecat-gradium[emulator]' (provides espeakng-loader)"
            ) from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate != ESPEAK_RATE:
            raise VoiceUnavailableError(f"eSpeak NG initialisation failed (returned {rate})")
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_SetVoiceByName(b"en")
        self._lib = lib

    def _on_audio(self, wav: Any, count: int, events: Any) -> int:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                # text_position counts characters from 1; audio_position is in milliseconds.
                sample = int(round(ev.audio_position * ESPEAK_RATE / 1000))
                self._words.append(WordEvent(ev.text_position - 1, ev.length, sample))
            i += 1
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            self._samples_seen += count
        if self._should_stop is not None and self._should_stop():
            self._aborted = True
            return 1
        return 0

    def synthesize(
        self, text: str, rate_wpm: int, should_stop: Callable[[], bool] | None = None
    ) -> Synthesis:
        with self._lock:
            if self._lib is None:
                self._load()
            lib: Any = self._lib
            self._chunks, self._words, self._samples_seen = [], [], 0
            self._should_stop, self._aborted = should_stop, False
            lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data, len(data))
            lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            result = Synthesis(samples.astype(np.int16), list(self._words), self._aborted)
            self._chunks, self._words, self._should_stop = [], [], None
            return result


_ENGINE = _Engine()


def rate_for_padding_bonus(padding_bonus: float) -> int:
    """Map Gradium's ``padding_bonus`` (-4 to 4, negative is faster) onto eSpeak's words/minute.

    Args:
        padding_bonus: Gradium's speed knob; 0 is the voice's normal pace.

    Returns:
        eSpeak's rate in words per minute (about 300 at -4, 175 at 0, 100 at 4).
    """
    # Each unit of padding adds roughly 12 % to the duration (a geometric scale).
    return int(round(min(450, max(80, _DEFAULT_WPM * (0.875**padding_bonus)))))


def synthesize(
    text: str, rate_wpm: int = _DEFAULT_WPM, should_stop: Callable[[], bool] | None = None
) -> Synthesis:
    """Speak ``text`` with eSpeak NG (blocking: call it from a worker thread).

    Args:
        text: Plain text, no markup.
        rate_wpm: Speaking rate in words per minute.
        should_stop: Checked after every block of audio; returning True aborts synthesis.

    Returns:
        The samples at 22050 Hz and the word events.

    Raises:
        VoiceUnavailableError: If eSpeak NG is not installed.
    """
    return _ENGINE.synthesize(text, rate_wpm, should_stop)


def ensure_available() -> None:
    """Load eSpeak NG now, so a missing extra fails at start-up rather than mid-request.

    Raises:
        VoiceUnavailableError: If eSpeak NG is not installed.
    """
    _ENGINE.synthesize("", _DEFAULT_WPM)


#: Samples quieter than this (of 32768) count as silence when trimming a cached word.
_SILENCE = 300
#: Silence after each cached word: the gap between words.
_WORD_GAP_S = 0.05
_WORD_CACHE_SIZE = 4096
_word_cache: collections.OrderedDict[tuple[str, int, int], tuple[np.ndarray, int]] = (
    collections.OrderedDict()
)


def cached_word(word: str, rate_wpm: int, sample_rate: int) -> tuple[np.ndarray, int] | None:
    """A word's audio from the cache, if it was synthesized before (cheap: no eSpeak call).

    Args:
        word: The word as sent.
        rate_wpm: Speaking rate.
        sample_rate: The output rate.

    Returns:
        ``(samples, speech_samples)``: the word's int16 audio at ``sample_rate`` followed by a
        short gap, and how many of those samples are speech; None when not cached.
    """
    key = (word, rate_wpm, sample_rate)
    hit = _word_cache.get(key)
    if hit is not None:
        _word_cache.move_to_end(key)
    return hit


def synthesize_word(word: str, rate_wpm: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """Synthesize one word alone, trim its silence, resample it, and cache it.

    Blocking: call it from a worker thread.

    Args:
        word: The word as sent (its punctuation is spoken as eSpeak would).
        rate_wpm: Speaking rate.
        sample_rate: The output rate.

    Returns:
        ``(samples, speech_samples)`` as :func:`cached_word` returns them.
    """
    from .audio import resample  # imported here: audio does not need the voice

    synth = synthesize(word, rate_wpm)
    loud = np.flatnonzero(np.abs(synth.samples.astype(np.int32)) > _SILENCE)
    speech = synth.samples[loud[0] : loud[-1] + 1] if loud.size else synth.samples[:0]
    gap = np.zeros(int(ESPEAK_RATE * _WORD_GAP_S), dtype=np.int16)
    out = resample(np.concatenate([speech, gap]), ESPEAK_RATE, sample_rate)
    speech_out = min(len(out), int(round(len(speech) * sample_rate / ESPEAK_RATE)))
    entry = (out, speech_out)
    _word_cache[(word, rate_wpm, sample_rate)] = entry
    while len(_word_cache) > _WORD_CACHE_SIZE:
        _word_cache.popitem(last=False)
    return entry


_in_flight: dict[tuple[str, int, int], asyncio.Future[tuple[np.ndarray, int]]] = {}


async def word_audio(word: str, rate_wpm: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """A word's cached audio, synthesizing it (once, however many requests ask) on a miss.

    Args:
        word: The word as sent.
        rate_wpm: Speaking rate.
        sample_rate: The output rate.

    Returns:
        ``(samples, speech_samples)`` as :func:`cached_word` returns them.
    """
    hit = cached_word(word, rate_wpm, sample_rate)
    if hit is not None:
        return hit
    key = (word, rate_wpm, sample_rate)
    pending = _in_flight.get(key)
    if pending is not None and pending.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(pending)
    future: asyncio.Future[tuple[np.ndarray, int]] = asyncio.get_running_loop().create_future()
    _in_flight[key] = future
    try:
        result = await asyncio.to_thread(synthesize_word, word, rate_wpm, sample_rate)
        future.set_result(result)
        return result
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    finally:
        if _in_flight.get(key) is future:
            del _in_flight[key]
