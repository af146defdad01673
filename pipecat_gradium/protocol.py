"""Gradium's TTS WebSocket messages: building, parsing into typed values, formats and rates.

Pure functions only: no sockets, no Pipecat. See ``shared/gradium-protocol.md`` for the protocol
this encodes.
"""

import binascii
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pybase64

#: Rates Gradium can produce as raw 16-bit PCM (``pcm_<rate>``), so nothing is resampled.
PCM_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)

#: The tag that makes Gradium speak every word it has received so far.
FLUSH_TAG = "<flush>"

#: Close code and error code Gradium uses for policy failures (bad key, bad setup).
POLICY_VIOLATION = 1008
#: Error code Gradium uses for an internal failure.
INTERNAL_ERROR = 1011

#: json_config ranges Gradium documents: (minimum, maximum).
JSON_CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "temp": (0.0, 1.4),
    "cfg_coef": (1.0, 4.0),
    "padding_bonus": (-4.0, 4.0),
}


class ProtocolError(Exception):
    """A server frame that is not a valid Gradium message."""


def output_format_for_rate(sample_rate: int) -> tuple[str, int]:
    """Choose the ``output_format`` to ask Gradium for, given the pipeline's output rate.

    Args:
        sample_rate: The rate the pipeline plays at, in Hz.

    Returns:
        ``(output_format, gradium_rate)``. When Gradium offers the rate, the two rates are equal
        and no resampling is needed; otherwise the smallest higher rate (or 48 kHz) is asked
        for and the caller resamples down from it.
    """
    if sample_rate in PCM_RATES:
        return f"pcm_{sample_rate}", sample_rate
    higher = [rate for rate in PCM_RATES if rate > sample_rate]
    rate = higher[0] if higher else PCM_RATES[-1]
    return f"pcm_{rate}", rate


def build_json_config(
    *,
    temp: float | None = None,
    cfg_coef: float | None = None,
    padding_bonus: float | None = None,
    rewrite_rules: str | None = None,
) -> dict[str, Any]:
    """Build Gradium's ``json_config`` from the values that are set, checking their ranges.

    Args:
        temp: Sampling temperature, 0.0 to 1.4.
        cfg_coef: Voice similarity, 1.0 to 4.0.
        padding_bonus: Speaking speed, -4.0 to 4.0; negative is faster.
        rewrite_rules: Text normalisation, e.g. ``"en"`` or ``"TimeEn,Date"``.

    Returns:
        The config object (empty when nothing is set).

    Raises:
        ValueError: If a value is outside Gradium's documented range.
    """
    config: dict[str, Any] = {}
    for key, value in (("temp", temp), ("cfg_coef", cfg_coef), ("padding_bonus", padding_bonus)):
        if value is None:
            continue
        low, high = JSON_CONFIG_RANGES[key]
        if not low <= value <= high:
            raise ValueError(f"Gradium {key}={value} is out of range [{low}, {high}]")
        config[key] = value
    if rewrite_rules:
        config["rewrite_rules"] = rewrite_rules
    return config


def setup_message(
    *,
    client_req_id: str,
    voice_id: str,
    output_format: str,
    model_name: str = "default",
    json_config: dict[str, Any] | None = None,
    pronunciation_id: str | None = None,
    retry_for_s: float | None = None,
) -> str:
    """Build the ``setup`` message that opens a multiplexed request.

    ``close_ws_on_eos`` is always false: sockets are reused and multiplexed, and the client
    decides when to close them.

    Args:
        client_req_id: The request's id; every later message of the request carries it.
        voice_id: Gradium voice id.
        output_format: E.g. ``"pcm_24000"``.
        model_name: Gradium model name.
        json_config: Extra model settings (see :func:`build_json_config`).
        pronunciation_id: A pronunciation dictionary id.
        retry_for_s: How long Gradium may retry allocating a worker for this setup before it
            gives up with an error (its window for transient worker shortages).

    Returns:
        The JSON text frame.
    """
    msg: dict[str, Any] = {
        "type": "setup",
        "model_name": model_name,
        "voice_id": voice_id,
        "output_format": output_format,
        "client_req_id": client_req_id,
        "close_ws_on_eos": False,
    }
    if json_config:
        msg["json_config"] = json_config
    if pronunciation_id:
        msg["pronunciation_id"] = pronunciation_id
    if retry_for_s:
        msg["retry_for_s"] = retry_for_s
    return json.dumps(msg)


def text_message(text: str, client_req_id: str) -> str:
    """Build a ``text`` message: Gradium concatenates these exactly as sent.

    Args:
        text: The text, separators included.
        client_req_id: The request it belongs to.

    Returns:
        The JSON text frame.
    """
    return json.dumps({"type": "text", "text": text, "client_req_id": client_req_id})


def end_of_stream_message(client_req_id: str) -> str:
    """Build the ``end_of_stream`` message that ends one request's text.

    Args:
        client_req_id: The request to end.

    Returns:
        The JSON text frame.
    """
    return json.dumps({"type": "end_of_stream", "client_req_id": client_req_id})


@dataclass(frozen=True)
class Ready:
    """The server accepted a request's setup."""

    client_req_id: str | None
    request_id: str
    sample_rate: int


@dataclass(frozen=True)
class Audio:
    """A chunk of a request's audio, decoded from base64."""

    client_req_id: str | None
    pcm: bytes
    start_s: float
    stop_s: float


@dataclass(frozen=True)
class Word:
    """A word the server spoke, timed from the start of the request's audio."""

    client_req_id: str | None
    text: str
    start_s: float
    stop_s: float


@dataclass(frozen=True)
class EndOfStream:
    """All of a request's audio has been sent."""

    client_req_id: str | None


class ErrorKind(Enum):
    """What an error from Gradium means for the client, read from its code and message.

    Gradium's codes are coarse (1008 covers a bad key, a plan limit and a malformed setup;
    1011 a worker failure and an unknown voice), so the message decides where the code does not.
    """

    KEY = "key"  # the API key was rejected: permanent
    CONCURRENCY = "concurrency"  # the plan's concurrency cap: frees up when a session ends
    SESSION_LIMIT = "session_limit"  # an idle or session-duration limit closed the socket
    VOICE = "voice"  # the voice id is unknown: permanent for that voice
    NO_WORKER = "no_worker"  # no worker could be allocated in time: transient
    REJECTED = "rejected"  # Gradium refused what was sent: sending it again fails again
    INTERNAL = "internal"  # a failure on Gradium's side: worth a retry


def error_kind(code: int | None, message: str) -> ErrorKind:
    """Classify an error frame (or a close code and reason) from Gradium.

    Args:
        code: The error's code (or the close code).
        message: Its message (or the close reason).

    Returns:
        What it means for the client.
    """
    text = message.lower()
    if code == POLICY_VIOLATION:
        if any(w in text for w in ("concurren", "too many", "limit exceeded", "sessions")):
            return ErrorKind.CONCURRENCY
        if any(w in text for w in ("idle", "session limit", "session duration", "timeout")):
            return ErrorKind.SESSION_LIMIT
        if any(w in text for w in ("key", "auth", "unauthor", "forbidden", "credential")):
            return ErrorKind.KEY
        return ErrorKind.REJECTED
    if "voice" in text:
        return ErrorKind.VOICE
    if "worker" in text:
        return ErrorKind.NO_WORKER
    return ErrorKind.INTERNAL


@dataclass(frozen=True)
class ServerError:
    """The server reported an error, for one request or for the whole socket."""

    client_req_id: str | None
    message: str
    code: int | None

    @property
    def kind(self) -> ErrorKind:
        """What the error means for the client (see :func:`error_kind`)."""
        return error_kind(self.code, self.message)

    @property
    def is_auth(self) -> bool:
        """Whether this looks like a rejected or missing API key."""
        return self.kind is ErrorKind.KEY


@dataclass(frozen=True)
class Unknown:
    """A message type this client does not use (e.g. ``need_more_text``): ignored."""

    client_req_id: str | None
    type: str
    raw: dict[str, Any] = field(default_factory=dict)


ServerMessage = Ready | Audio | Word | EndOfStream | ServerError | Unknown


def mask_secrets(text: str, url: str) -> str:
    """Hide every query-string value of ``url`` (a key or token put there) inside ``text``.

    Args:
        text: An error message or log line that may quote the URL or its parts.
        url: The service's URL.

    Returns:
        ``text`` with each query value replaced by ``***``.
    """
    for _, value in parse_qsl(urlsplit(url).query, keep_blank_values=False):
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text


def decode_audio(data: str) -> bytes:
    """Decode an audio message's base64 payload.

    Strict decoding is the fast path; a payload it rejects (line breaks, say) is decoded the
    lenient way ``base64.b64decode`` has always used, so nothing Gradium sends is refused.

    Args:
        data: The ``audio`` field.

    Returns:
        The PCM (or G.711) bytes.

    Raises:
        TypeError: If the field is not a string.
        ValueError: If it is not base64 even leniently read (``binascii.Error``).
    """
    if not isinstance(data, str):
        raise TypeError(f"audio is {type(data).__name__}, not a base64 string")
    try:
        return pybase64.b64decode(data, validate=True)
    except binascii.Error:
        return pybase64.b64decode(data)


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Parse one server frame into a typed message.

    Args:
        raw: The frame as received.

    Returns:
        The typed message; unknown types come back as :class:`Unknown`.

    Raises:
        ProtocolError: If the frame is not a JSON object with a string ``type``, or a known
            message lacks a field it needs.
    """
    try:
        # orjson and pybase64 (SIMD) read an audio message in a fifth of the time of json and
        # base64: at 100+ sessions in one process these two were a tenth of the CPU.
        msg = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not JSON: {raw[:80]!r}") from e
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"not a Gradium message: {str(msg)[:80]}")
    kind = msg["type"]
    req_id = msg.get("client_req_id")
    try:
        if kind == "audio":
            return Audio(
                req_id,
                decode_audio(msg["audio"]),
                float(msg.get("start_s", 0.0)),
                float(msg.get("stop_s", 0.0)),
            )
        if kind == "text":
            return Word(
                req_id, str(msg["text"]), float(msg["start_s"]), float(msg.get("stop_s", 0.0))
            )
        if kind == "ready":
            return Ready(req_id, str(msg.get("request_id", "")), int(msg.get("sample_rate", 0)))
        if kind == "end_of_stream":
            return EndOfStream(req_id)
        if kind == "error":
            code = msg.get("code")
            return ServerError(
                req_id, str(msg.get("message", msg)), int(code) if code is not None else None
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"bad {kind!r} message: {e}") from e
    return Unknown(req_id, kind, msg)
