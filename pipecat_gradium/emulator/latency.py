"""The emulator's latency model: how long each step of a request takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class LatencyModel:
    """Delays the emulator applies, each defined precisely.

    Attributes:
        handshake_s: Delay before the WebSocket upgrade completes.
        setup_s: From ``setup`` received to ``ready`` sent; no audio is sent before ``ready``.
        model_delay_s: From the moment a request first has a word it may speak, to its first
            audio chunk.
        lookahead_words: The last N complete words wait for more text, ``<flush>`` or
            ``end_of_stream`` before they may be spoken.
        speed: Generation speed relative to real time (4.0 sends an 80 ms chunk every 20 ms).
    """

    handshake_s: float = 0.1
    setup_s: float = 0.05
    model_delay_s: float = 0.15
    lookahead_words: int = 2
    speed: float = 2.0

    def __post_init__(self) -> None:
        """Validate the values.

        Raises:
            ValueError: If a delay is negative, the look-ahead negative or the speed not positive.
        """
        if min(self.handshake_s, self.setup_s, self.model_delay_s) < 0:
            raise ValueError("latency delays must be >= 0")
        if self.lookahead_words < 0:
            raise ValueError("lookahead_words must be >= 0")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")

    @classmethod
    def instant(cls) -> LatencyModel:
        """A model for fast tests: delays of a millisecond, 50x real time, look-ahead kept at 2.

        Returns:
            The model.
        """
        return cls(
            handshake_s=0.0, setup_s=0.001, model_delay_s=0.001, lookahead_words=2, speed=50.0
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict.

        Returns:
            Field name to value.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: LatencyModel | None = None) -> LatencyModel:
        """Build a model from a dict of fields, starting from ``base`` (or the defaults).

        Args:
            data: Field values; unknown keys are an error.
            base: Values for the fields ``data`` leaves out.

        Returns:
            The new model.

        Raises:
            ValueError: On an unknown field or an invalid value.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown latency fields: {sorted(unknown)}")
        values = (base or cls()).to_dict() | data
        values["lookahead_words"] = int(values["lookahead_words"])
        for key in ("handshake_s", "setup_s", "model_delay_s", "speed"):
            values[key] = float(values[key])
        return cls(**values)
