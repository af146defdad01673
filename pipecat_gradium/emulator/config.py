"""Validation of a ``setup`` message into the settings of one request."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from loguru import logger

from .audio import FORMATS, OutputFormat

_RANGES: dict[str, tuple[float, float]] = {
    "temp": (0.0, 1.4),
    "cfg_coef": (1.0, 4.0),
    "padding_bonus": (-4.0, 4.0),
}
_RULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class SetupError(ValueError):
    """A setup the server refuses (error code 1008)."""


@dataclass(frozen=True)
class RequestConfig:
    """The settings of one request, validated.

    Attributes:
        client_req_id: The client's id for multiplexing, or None.
        output: The output format.
        model_name: The model name echoed in ``ready``.
        padding_bonus: Speaking-rate knob (negative is faster).
        close_ws_on_eos: Whether the server closes the socket after this request ends.
        rewrite_rules: ``json_config.rewrite_rules``: the text normalisation, or None.
        voice_id: The voice asked for (``voice_id``, else the ``voice`` name), or None.
        retry_for_s: The setup's retry window for worker allocation, or None when absent.
    """

    client_req_id: str | None
    output: OutputFormat
    model_name: str
    padding_bonus: float
    close_ws_on_eos: bool
    rewrite_rules: str | None = None
    voice_id: str | None = None
    retry_for_s: float | None = None


def _json_config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SetupError(f"json_config is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SetupError("json_config must be an object (or a JSON string of one)")
    for key, (low, high) in _RANGES.items():
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SetupError(f"json_config.{key} must be a number")
            if not low <= v <= high:
                raise SetupError(f"json_config.{key}={v} is out of range [{low}, {high}]")
    if (rules := value.get("rewrite_rules")) is not None:
        if not isinstance(rules, str) or not all(
            _RULE_NAME.match(p.strip()) for p in rules.split(",")
        ):
            raise SetupError(
                "json_config.rewrite_rules must be a language ('en', 'fr', 'de', 'es', 'pt') "
                "or a comma-separated list of rule names like 'TimeEn,Date'"
            )
    return value


def parse_setup(msg: dict[str, Any]) -> RequestConfig:
    """Validate a ``setup`` message.

    Args:
        msg: The decoded message.

    Returns:
        The request's settings.

    Raises:
        SetupError: With a message naming the bad field.
    """
    req_id = msg.get("client_req_id")
    if req_id is not None and not isinstance(req_id, str):
        raise SetupError("client_req_id must be a string")
    fmt_name = msg.get("output_format", "wav")
    if fmt_name == "opus":
        logger.warning("emulator: output_format 'opus' is not supported by the emulator")
        raise SetupError(
            "output_format 'opus' is not supported by this emulator; "
            f"use one of {', '.join(sorted(FORMATS))}"
        )
    if not isinstance(fmt_name, str) or fmt_name not in FORMATS:
        raise SetupError(
            f"unsupported output_format {fmt_name!r}; use one of {', '.join(sorted(FORMATS))}"
        )
    close = msg.get("close_ws_on_eos", True)
    if close is None:
        close = True
    if not isinstance(close, bool):
        raise SetupError("close_ws_on_eos must be a boolean")
    model = msg.get("model_name") or "default"
    if not isinstance(model, str):
        raise SetupError("model_name must be a string")
    voice_id = msg.get("voice_id")
    if voice_id is None:
        voice_id = msg.get("voice")
    if voice_id is not None and not isinstance(voice_id, str):
        raise SetupError("voice_id must be a string")
    retry = msg.get("retry_for_s")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int | float)):
        raise SetupError("retry_for_s must be a number of seconds")
    if retry is not None and not 0 <= retry < float("inf"):
        raise SetupError(f"retry_for_s={retry} must be a finite number of seconds >= 0")
    config = _json_config(msg.get("json_config"))
    return RequestConfig(
        client_req_id=req_id,
        output=FORMATS[fmt_name],
        model_name=model,
        padding_bonus=float(config.get("padding_bonus", 0.0)),
        close_ws_on_eos=close,
        rewrite_rules=config.get("rewrite_rules"),
        voice_id=voice_id,
        retry_for_s=float(retry) if retry is not None else None,
    )
