"""The emulator's latency model: how long each step of a request takes, and the network.

The network model (off by default) delays every WebSocket message in each direction by its own
seeded random delay, keeping order as TCP does: a message is delivered no earlier than its own
delay after it was sent, and never before the message sent ahead of it. So a stall holds up
everything behind it, like a lost segment being retransmitted.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Generic, TypeVar

T = TypeVar("T")


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
        net_delay_s: Network model: mean one-way delay of every message, both directions.
        net_jitter_s: Each message's delay is drawn uniformly from
            ``net_delay_s ± net_jitter_s`` (never below 0).
        stall_probability: Chance that a message is also held by ``stall_s`` (a stall).
        stall_s: Length of a stall.
        handshake_jitter_s: The handshake takes ``handshake_s ± handshake_jitter_s``, uniformly.
        seed: Seeds every draw: the same seed gives the same delays, connection by connection.
        deflate: Accept permessage-deflate when a client offers it. Off in load runs:
            compressing every audio frame costs the emulator more than the client costs.
        voice_cache: Synthesize each word once and reuse its audio (load runs): word timings
            are kept, the prosody across words is lost, and eSpeak stops costing CPU once the
            words are known.
    """

    handshake_s: float = 0.1
    setup_s: float = 0.05
    model_delay_s: float = 0.15
    lookahead_words: int = 2
    speed: float = 2.0
    net_delay_s: float = 0.0
    net_jitter_s: float = 0.0
    stall_probability: float = 0.0
    stall_s: float = 0.2
    handshake_jitter_s: float = 0.0
    seed: int = 0
    deflate: bool = True
    voice_cache: bool = False

    def __post_init__(self) -> None:
        """Validate the values.

        Raises:
            ValueError: If a delay is negative, the look-ahead negative, the speed not positive
                or the stall probability outside [0, 1].
        """
        delays = (
            self.handshake_s,
            self.setup_s,
            self.model_delay_s,
            self.net_delay_s,
            self.net_jitter_s,
            self.stall_s,
            self.handshake_jitter_s,
        )
        if min(delays) < 0:
            raise ValueError("latency delays must be >= 0")
        if self.lookahead_words < 0:
            raise ValueError("lookahead_words must be >= 0")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if not 0.0 <= self.stall_probability <= 1.0:
            raise ValueError("stall_probability must be in [0, 1]")

    @classmethod
    def instant(cls) -> LatencyModel:
        """A model for fast tests: delays of a millisecond, 50x real time, look-ahead kept at 2.

        Returns:
            The model.
        """
        return cls(
            handshake_s=0.0, setup_s=0.001, model_delay_s=0.001, lookahead_words=2, speed=50.0
        )

    def with_jitter(
        self,
        *,
        net_delay_s: float = 0.04,
        net_jitter_s: float = 0.02,
        stall_probability: float = 0.01,
        stall_s: float = 0.2,
        handshake_jitter_s: float = 0.05,
        seed: int = 1,
    ) -> LatencyModel:
        """This model plus a network: by default 40 ms ± 20 ms per message, 1 % stalls of 200 ms.

        Args:
            net_delay_s: Mean one-way delay.
            net_jitter_s: Half-width of the uniform spread around it.
            stall_probability: Chance of a stall per message.
            stall_s: Length of a stall.
            handshake_jitter_s: Half-width of the handshake's spread.
            seed: The seed.

        Returns:
            A new model.
        """
        return LatencyModel.from_dict(
            {
                "net_delay_s": net_delay_s,
                "net_jitter_s": net_jitter_s,
                "stall_probability": stall_probability,
                "stall_s": stall_s,
                "handshake_jitter_s": handshake_jitter_s,
                "seed": seed,
            },
            base=self,
        )

    @property
    def has_network(self) -> bool:
        """Whether messages are delayed at all."""
        return self.net_delay_s > 0 or self.net_jitter_s > 0 or self.stall_probability > 0

    def message_delay(self, rng: random.Random) -> float:
        """Draw one message's one-way delay.

        Args:
            rng: The connection's (seeded) generator for this direction.

        Returns:
            Seconds: ``U(net_delay_s - net_jitter_s, net_delay_s + net_jitter_s)`` clipped at 0,
            plus ``stall_s`` with probability ``stall_probability``.
        """
        delay = self.net_delay_s
        if self.net_jitter_s:
            delay += rng.uniform(-self.net_jitter_s, self.net_jitter_s)
        if self.stall_probability and rng.random() < self.stall_probability:
            delay += self.stall_s
        return max(0.0, delay)

    def handshake_delay(self, rng: random.Random) -> float:
        """Draw one handshake's delay: ``U(handshake_s ± handshake_jitter_s)``, clipped at 0.

        Args:
            rng: The emulator's (seeded) generator for handshakes.

        Returns:
            Seconds.
        """
        if not self.handshake_jitter_s:
            return self.handshake_s
        return max(0.0, self.handshake_s + rng.uniform(-1, 1) * self.handshake_jitter_s)

    def rng(self, *stream: object) -> random.Random:
        """A generator seeded by ``seed`` and a stream name (e.g. connection id, direction).

        Args:
            *stream: What tells this stream from the others.

        Returns:
            The generator: the same seed and stream give the same draws.
        """
        return random.Random("/".join(str(s) for s in (self.seed, *stream)))

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
        for f in fields(cls):
            if f.type == "int":
                values[f.name] = int(values[f.name])
            elif f.type == "float":
                values[f.name] = float(values[f.name])
            elif f.type == "bool":
                values[f.name] = bool(values[f.name])
        return cls(**values)


class DelayLine(Generic[T]):
    """One direction of one connection under the network model: in order, each item late.

    ``put`` never blocks; a task delivers each item once its time has come.
    """

    def __init__(
        self, model: LatencyModel, rng: random.Random, deliver: Callable[[T], Awaitable[None]]
    ) -> None:
        """Create the line (its task starts with the first item).

        Args:
            model: The latency model (its network fields).
            rng: This line's seeded generator.
            deliver: Called for each item, in order, when its delay has passed.
        """
        self._model = model
        self._rng = rng
        self._deliver = deliver
        self._queue: collections.deque[tuple[float, T]] = collections.deque()
        self._last_at = 0.0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None

    def put(self, item: T) -> float:
        """Send an item down the line.

        Args:
            item: The message.

        Returns:
            When it will be delivered (monotonic seconds).
        """
        at = max(time.monotonic() + self._model.message_delay(self._rng), self._last_at)
        self._last_at = at
        self._queue.append((at, item))
        self._empty.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gradium-emu-delay-line")
        return at

    async def drain(self) -> None:
        """Wait until every item put so far has been delivered."""
        await self._empty.wait()

    async def close(self) -> None:
        """Drop whatever is still in flight and stop the task."""
        self._queue.clear()
        self._empty.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._empty.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            at, item = self._queue[0]
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._queue.popleft()
            await self._deliver(item)
