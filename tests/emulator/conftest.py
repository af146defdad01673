"""Shared fixtures and helpers for the emulator tests (every test runs over real sockets)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pipecat_gradium.emulator import GradiumEmulator, LatencyModel

KEY = "test-key"


@pytest.fixture
async def emu() -> AsyncIterator[GradiumEmulator]:
    async with GradiumEmulator(KEY, latency=LatencyModel.instant()) as e:
        yield e


async def open_ws(
    emu: GradiumEmulator, *, key: str | None = KEY, path: str = "/api/speech/tts", query: str = ""
) -> ClientConnection:
    headers = {"x-api-key": key} if key is not None else {}
    url = f"ws://127.0.0.1:{emu.port}{path}" + (f"?{query}" if query else "")
    return await connect(url, additional_headers=headers)


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


async def read_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every JSON message until the server closes the socket."""
    out: list[dict[str, Any]] = []
    try:
        async for raw in ws:
            out.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return out


async def read_until_eos(ws: ClientConnection, req_id: str | None = None) -> list[dict[str, Any]]:
    """Messages until the end_of_stream (or error) of one request."""
    out: list[dict[str, Any]] = []
    while True:
        msg = json.loads(await ws.recv())
        out.append(msg)
        if msg.get("client_req_id") == req_id and msg["type"] in ("end_of_stream", "error"):
            return out


async def speak(emu: GradiumEmulator, texts: Iterable[str], **setup: Any) -> list[dict[str, Any]]:
    """One single-use request: setup, texts, end_of_stream; read until the server closes."""
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format=setup.pop("output_format", "pcm_16000"), **setup)
    rid = {"client_req_id": setup["client_req_id"]} if "client_req_id" in setup else {}
    for t in texts:
        await send(ws, type="text", text=t, **rid)
    await send(ws, type="end_of_stream", **rid)
    msgs = await read_until_closed(ws)
    assert ws.close_code == 1000, (ws.close_code, msgs[-1:])
    return msgs


def audio_of(msgs: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(m["audio"]) for m in msgs if m["type"] == "audio")


def pcm16(msgs: list[dict[str, Any]]) -> np.ndarray:
    return np.frombuffer(audio_of(msgs), dtype="<i2")


def words_of(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in msgs if m["type"] == "text"]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
