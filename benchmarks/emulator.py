"""The Gradium emulator in its own process, and its HTTP control routes."""

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import websockets

LATENCY_MODEL: dict[str, Any] = {
    "handshake_s": 0.1,
    "setup_s": 0.05,
    "model_delay_s": 0.15,
    "lookahead_words": 2,
    "speed": 2.0,
}


@dataclass
class EmulatorProcess:
    """A running ``python -m pipecat_gradium.emulator`` child process."""

    proc: asyncio.subprocess.Process
    ws_url: str
    base_url: str
    session: aiohttp.ClientSession

    @property
    def control_url(self) -> str:
        """The emulator's HTTP root, e.g. ``http://127.0.0.1:PORT``."""
        return self.base_url.removesuffix("/api/")

    async def stats(self) -> dict[str, Any]:
        """Everything the emulator observed since the last reset."""
        async with self.session.get(f"{self.control_url}/_emulator/stats") as resp:
            return await resp.json()

    async def reset(self) -> None:
        """Forget the stats so far."""
        async with self.session.post(f"{self.control_url}/_emulator/reset") as resp:
            resp.raise_for_status()

    async def set_latency(self, **fields: Any) -> dict[str, Any]:
        """Change the latency model for new requests.

        Args:
            **fields: ``LatencyModel`` fields.

        Returns:
            The model now in force.
        """
        async with self.session.post(f"{self.control_url}/_emulator/latency", json=fields) as r:
            r.raise_for_status()
            return await r.json()

    async def clock_offset_bound(self) -> float:
        """Check that both processes read the same monotonic clock.

        Opens one raw socket and checks the emulator's ``opened_at`` lies between this
        process's clock readings around the handshake.

        Returns:
            How far outside [before, after] the emulator's timestamp fell (0 when inside).
        """
        await self.reset()
        before = time.monotonic()
        async with websockets.connect(self.ws_url, additional_headers={"x-api-key": "test-key"}):
            after = time.monotonic()
        opened = (await self.stats())["connections"][0]["opened_at"]
        await self.reset()
        return max(0.0, before - opened, opened - after)

    async def close(self) -> None:
        """Stop the process."""
        await self.session.close()
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_emulator(**latency: Any) -> EmulatorProcess:
    """Start the emulator on a free port with the given latency model.

    Args:
        **latency: ``LatencyModel`` fields overriding :data:`LATENCY_MODEL`.

    Returns:
        The running emulator.
    """
    model = LATENCY_MODEL | latency
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipecat_gradium.emulator",
        "--port",
        "0",
        "--handshake-ms",
        str(model["handshake_s"] * 1000),
        "--setup-ms",
        str(model["setup_s"] * 1000),
        "--model-delay-ms",
        str(model["model_delay_s"] * 1000),
        "--lookahead-words",
        str(model["lookahead_words"]),
        "--speed",
        str(model["speed"]),
        "--idle-timeout-s",
        "3600",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 2:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not line:
            raise RuntimeError("the emulator exited before printing its URLs")
        key, _, value = line.partition("=")
        urls[key] = value
    return EmulatorProcess(proc, urls["ws_url"], urls["base_url"], aiohttp.ClientSession())


def dumps(stats: dict[str, Any]) -> str:
    """Stats as compact JSON (for debugging)."""
    return json.dumps(stats, separators=(",", ":"))
