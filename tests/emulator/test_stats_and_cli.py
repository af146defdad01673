"""Stats: in-process, over HTTP, and the command-line server in a separate process."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import pytest

from pipecat_gradium.emulator import GradiumEmulator

from .conftest import open_ws, read_until_closed, send, speak

pytestmark = pytest.mark.timeout(30)


async def test_stats_record_requests_and_connections(emu: GradiumEmulator) -> None:
    await speak(emu, ["Count ", "these words."], client_req_id="q")
    conn = emu.stats.connections[0]
    req = emu.stats.requests[0]
    assert conn.closed_by == "server" and conn.requests == [req]
    assert req.client_req_id == "q" and req.setup["client_req_id"] == "q"
    assert req.texts == ["Count ", "these words."] and len(req.text_times) == 2
    assert req.finished and not req.left_open and req.error is None
    assert req.audio_s == pytest.approx(sum(d for _, d in req.audio_chunks))
    assert [w for w, _, _ in req.words] == ["Count", "these", "words."]
    json.dumps(emu.stats.to_dict())


async def test_wait_for_times_out_clearly(emu: GradiumEmulator) -> None:
    with pytest.raises(TimeoutError, match="still false"):
        await emu.stats.wait_for(lambda s: len(s.requests) > 0, timeout=0.05)


async def test_http_stats_reset_and_latency(emu: GradiumEmulator) -> None:
    await speak(emu, ["Over HTTP."])
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{emu.port}/_emulator"
        async with http.get(f"{base}/stats") as r:
            data = await r.json()
        assert data["requests"][0]["texts"] == ["Over HTTP."]
        assert data["connections"][0]["closed_by"] == "server"
        async with http.post(f"{base}/latency", json={"model_delay_s": 0.25}) as r:
            assert r.status == 200
        assert emu.latency.model_delay_s == 0.25 and emu.latency.speed == 50.0
        async with http.post(f"{base}/latency", json={"bogus": 1}) as r:
            assert r.status == 400
        async with http.post(f"{base}/reset") as r:
            assert r.status == 200
        async with http.get(f"{base}/stats") as r:
            assert (await r.json())["requests"] == []


async def test_client_close_marks_request_left_open(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm", client_req_id="z", close_ws_on_eos=False)
    await send(ws, type="text", text="never finished ", client_req_id="z")
    await ws.close()
    await emu.stats.wait_for(lambda s: s.connections[0].closed_by == "client")
    assert emu.stats.requests[0].left_open


async def test_cli_runs_a_server_in_another_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipecat_gradium.emulator",
        "--port",
        "0",
        "--handshake-ms",
        "0",
        "--setup-ms",
        "1",
        "--model-delay-ms",
        "1",
        "--speed",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("ws_url=ws://127.0.0.1:")
        base = (await proc.stdout.readline()).decode().strip()
        assert base.startswith("base_url=http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        emu = GradiumEmulator(port=port)  # only used for its URL helpers
        ws = await open_ws(emu)
        await send(ws, type="setup", output_format="pcm_16000")
        await send(ws, type="text", text="From another process.")
        await send(ws, type="end_of_stream")
        msgs = await read_until_closed(ws)
        assert msgs[-1]["type"] == "end_of_stream"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/_emulator/stats") as r:
                data = await r.json()
        assert data["requests"][0]["finished"] is True
    finally:
        proc.terminate()
        await proc.wait()
