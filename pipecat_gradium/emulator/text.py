"""Text handling: the request's text as words and tags, and eSpeak's events mapped onto words."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .voice import WordEvent

MIN_BREAK_S = 0.1
MAX_BREAK_S = 2.0

_TAG = re.compile(r"<[^<>]*>")
_BREAK_TIME = re.compile(
    r"""^<\s*break\s+time\s*=\s*["']?\s*([0-9.]+)\s*(ms|s)?\s*["']?\s*/?\s*>$"""
)
_FLUSH = re.compile(r"^<\s*flush\s*/?\s*>$")


@dataclass(frozen=True)
class Word:
    """A source word: a run of non-space characters between spaces or tags.

    Attributes:
        text: The word exactly as the client sent it.
        complete: True when whitespace or a tag follows it (it can no longer grow).
    """

    text: str
    complete: bool


@dataclass(frozen=True)
class Break:
    """A ``<break time="..."/>`` tag: that much silence (clamped to 0.1 to 2.0 s)."""

    seconds: float


@dataclass(frozen=True)
class Flush:
    """A ``<flush>`` tag: everything before it may be spoken now."""


Item = Word | Break | Flush


def _parse_tag(tag: str) -> Item | None:
    if _FLUSH.match(tag):
        return Flush()
    if m := _BREAK_TIME.match(tag):
        value = float(m.group(1))
        if m.group(2) == "ms":
            value /= 1000.0
        return Break(min(MAX_BREAK_S, max(MIN_BREAK_S, value)))
    return None  # any other tag is stripped


def parse(text: str, final: bool) -> list[Item]:
    """Split the text received so far into words and tags.

    Args:
        text: All text of the request, concatenated exactly as sent.
        final: True once end_of_stream arrived: a trailing partial word is then complete and
            an unterminated tag is dropped.

    Returns:
        The items in order. Re-parsing a longer text never changes the complete items that
        came before, so indices into the list are stable.
    """
    items: list[Item] = []
    pos = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch == "<":
            end = text.find(">", pos)
            if end < 0:
                break  # a tag still arriving: wait for the rest (dropped at the end)
            tag = _parse_tag(text[pos : end + 1])
            if tag is not None:
                items.append(tag)
            pos = end + 1
            continue
        start = pos
        while pos < n and not text[pos].isspace() and text[pos] != "<":
            pos += 1
        items.append(Word(text[start:pos], complete=pos < n or final))
    return items


def words_text(words: list[str]) -> str:
    """Join source words into the text given to the synthesizer.

    Args:
        words: Source words in order.

    Returns:
        The words separated by single spaces.
    """
    return " ".join(words)


def word_spans(words: list[str]) -> list[tuple[int, int]]:
    """Character spans of each word inside :func:`words_text` of the same words.

    Args:
        words: Source words in order.

    Returns:
        ``(start, end)`` character offsets, end exclusive.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return spans


def word_times(
    words: list[str], events: list[WordEvent], total_samples: int, speech_end: int
) -> list[tuple[int, int]]:
    """Map eSpeak's word events back onto the source words.

    eSpeak's events do not always match whitespace words ("$3.50" gives several events, an
    emoji may give none), so each event is assigned to the source word holding its first
    character, each word starts at its first event, words without an event are placed
    between their neighbours, and starts are forced to rise.

    Args:
        words: Source words, as synthesized with :func:`words_text`.
        events: eSpeak's word events for that text.
        total_samples: Length of the synthesized audio.
        speech_end: Sample index where speech ends (trailing silence excluded).

    Returns:
        ``(start_sample, stop_sample)`` per source word, rising, inside the audio.
    """
    if not words:
        return []
    spans = word_spans(words)
    starts: list[int | None] = [None] * len(words)
    for ev in events:
        for i, (a, b) in enumerate(spans):
            # An event starting in the gap before a word belongs to that word.
            if ev.char_start < b or i == len(spans) - 1:
                if starts[i] is None or ev.sample < (starts[i] or 0):
                    starts[i] = ev.sample
                break
    end = max(1, min(total_samples, max(speech_end, 1)))
    # Fill gaps by interpolating between known neighbours.
    known = [(i, s) for i, s in enumerate(starts) if s is not None]
    filled: list[float] = []
    for i, s in enumerate(starts):
        if s is not None:
            filled.append(float(s))
            continue
        prev = max((k for k in known if k[0] < i), default=(-1, 0), key=lambda k: k[0])
        nxt = min((k for k in known if k[0] > i), default=(len(words), end), key=lambda k: k[0])
        frac = (i - prev[0]) / (nxt[0] - prev[0])
        filled.append(prev[1] + frac * (nxt[1] - prev[1]))
    # Starts must rise strictly and stay inside the speech.
    out_starts: list[int] = []
    last = -1
    for i, s in enumerate(filled):
        room = end - (len(words) - i)
        v = int(min(max(s, last + 1), max(room, last + 1)))
        out_starts.append(v)
        last = v
    result: list[tuple[int, int]] = []
    for i, s in enumerate(out_starts):
        stop = out_starts[i + 1] if i + 1 < len(out_starts) else max(end, s + 1)
        result.append((s, min(stop, total_samples) if total_samples > s else stop))
    return result
