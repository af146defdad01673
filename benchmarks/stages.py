"""First audio by stage, and how late tokens reach the service: pure helpers of the load profile.

:mod:`benchmarks.profile_level` runs a level and calls these on what it recorded. The emulator
stamps its request records with ``time.monotonic()``, the clock of this process too (Linux's
``CLOCK_MONOTONIC`` is system-wide), so the two processes' times subtract.
"""

import collections
import statistics
import time
from typing import Any

from pipecat.frames.frames import LLMTextFrame
from pipecat.processors.frame_processor import FrameDirection

from .measure import Answer, pct


def watch_tokens(service: Any) -> list[float]:
    """Note when ``service`` starts on each LLM text frame (its ``process_frame`` wrapped).

    Args:
        service: The pipeline's TTS stage (any client).

    Returns:
        The list the times are appended to.
    """
    times: list[float] = []
    inner = service.process_frame

    async def process_frame(frame: Any, direction: FrameDirection) -> None:
        if isinstance(frame, LLMTextFrame):
            times.append(time.monotonic())
        await inner(frame, direction)

    service.process_frame = process_frame
    return times


def transit_by_index(answers: list[tuple[Answer, list[float]]], rate: float) -> list[float]:
    """Median transit (streamed at its due time -> the service starts on it) per token index, ms.

    The same for every client when the backlog is the pipeline's, not the service's own.

    Args:
        answers: Each answer with the times its service started on its tokens, in order.
        rate: Tokens a second after the first (tokens are due at fixed times).

    Returns:
        One median per token index, in whole ms.
    """
    per: dict[int, list[float]] = collections.defaultdict(list)
    for a, times in answers:
        if a.first_token_at is None:
            continue
        for i, t in enumerate(times):
            per[i].append(t - (a.first_token_at + i / rate))
    return [round(1000 * statistics.median(per[i])) for i in sorted(per)]


def client_stages(
    answers: list[tuple[Answer, list[float]]],
    requests: list[dict[str, Any]],
    tokens: list[str],
    rate: float,
) -> dict[str, Any]:
    """The first text's way through the client: token in transit, then held or sent.

    For each answer, the token that let the first text message go (the first whose text
    reaches past the message's, or the last token) is located from the message's length.

    Args:
        answers: Each answer with the times its service started on its tokens, in order.
        requests: The emulator's request records (its stats).
        tokens: The answer's tokens, as streamed.
        rate: Tokens a second after the first.

    Returns:
        Medians in ms of: that token's transit (streamed at its due time -> the service starts
        on it) and the service's own delay (starts on it -> the emulator receives the text).
    """
    by_id = {r["client_req_id"]: r for r in requests if r.get("client_req_id")}
    ends = [len("".join(tokens[: i + 1])) for i in range(len(tokens))]
    transit: list[float] = []
    held: list[float] = []
    for a, times in answers:
        req = by_id.get(a.context_id or "")
        if not req or not req["texts"] or a.first_token_at is None or len(times) < len(tokens):
            continue
        n = len(req["texts"][0].replace("<flush>", ""))
        k = next((i for i, e in enumerate(ends) if e > n), len(tokens) - 1)
        # Tokens are streamed at fixed due times from the first (see Session.stream).
        due = a.first_token_at + k / rate
        transit.append(times[k] - due)
        held.append(req["text_times"][0] - times[k])
    med = statistics.median
    return {
        "first_texts_example": next((r["texts"][:3] for r in requests if r["texts"]), None),
        "matched": len(transit),
        "token_transit_median_ms": 1000 * med(transit) if transit else None,
        "token_transit_p95_ms": 1000 * (pct(transit, 95) or 0) if transit else None,
        "service_to_wire_median_ms": 1000 * med(held) if held else None,
        "service_to_wire_p95_ms": 1000 * (pct(held, 95) or 0) if held else None,
    }


def ttfa_stages(answers: list[Answer], requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each answer's first audio spent its time, from both processes' clocks.

    An answer is matched to its first request by ``client_req_id`` (every client here uses
    the Pipecat context id). Stages, per answer:

    * ``to_first_text``: first token streamed -> the emulator receives the first text (the
      token frames' way to the client, its aggregation and its send);
    * ``server``: first text received -> first audio sent (the latency model, the words the
      first message holds, and the emulator's own loop);
    * ``to_pipeline``: first audio sent -> first audio frame out of the client (its receive
      path and Pipecat's audio context).

    Args:
        answers: The answers of a load level.
        requests: The emulator's request records (its stats).

    Returns:
        Per stage its median, p95 and worst in ms, how many answers were matched, and the
        median words of the first text message.
    """
    by_id = {r["client_req_id"]: r for r in requests if r.get("client_req_id")}
    stages: dict[str, list[float]] = {"to_first_text": [], "server": [], "to_pipeline": []}
    first_words: list[int] = []
    for a in answers:
        req = by_id.get(a.context_id or "")
        if not req or not req["text_times"] or req["first_audio_at"] is None:
            continue
        if a.first_token_at is None or a.first_audio_at is None:
            continue
        text_at = req["text_times"][0]
        stages["to_first_text"].append(text_at - a.first_token_at)
        stages["server"].append(req["first_audio_at"] - text_at)
        stages["to_pipeline"].append(a.first_audio_at - req["first_audio_at"])
        first_words.append(len(req["texts"][0].replace("<flush>", "").split()))
    out: dict[str, Any] = {"matched": len(first_words)}
    for key, values in stages.items():
        out[key] = (
            {
                "median_ms": 1000 * statistics.median(values),
                "p95_ms": 1000 * (pct(values, 95) or 0),
                "worst_ms": 1000 * max(values),
            }
            if values
            else None
        )
    out["first_text_words_median"] = statistics.median(first_words) if first_words else None
    return out
