"""Each injected fault, holds, and prompt stop of generation when the client closes."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from pipecat_gradium.emulator import Fault, GradiumEmulator, LatencyModel

from .conftest import KEY, open_ws, read_until_closed, read_until_eos, send, speak

pytestmark = pytest.mark.timeout(20)

LONG = "This answer is long enough to produce many audio chunks for the fault to fire in. "


async def start_answer(emu: GradiumEmulator, query: str = "") -> object:
    ws = await open_ws(emu, query=query)
    await send(ws, type="setup", output_format="pcm_16000")
    await send(ws, type="text", text=LONG)
    await send(ws, type="end_of_stream")
    return ws


async def test_reject_key_fault(emu: GradiumEmulator) -> None:
    emu.fault_next_connection(Fault.REJECT_KEY)
    ws = await open_ws(emu)
    msgs = await read_until_closed(ws)
    assert msgs[0]["code"] == 1008 and ws.close_code == 1008
    # Only the next connection got it.
    assert (await speak(emu, ["Fine now."]))[-1]["type"] == "end_of_stream"


async def test_error_mid_answer(emu: GradiumEmulator) -> None:
    emu.fault_next_connection(Fault.ERROR_MID_ANSWER)
    ws = await start_answer(emu)
    msgs = await read_until_closed(ws)
    assert [m["type"] for m in msgs if m["type"] == "audio"] == ["audio"] * 3
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == 1011
    assert ws.close_code == 1011
    assert emu.stats.requests[-1].left_open and not emu.stats.requests[-1].finished


async def test_reset_mid_answer_via_query_parameter(emu: GradiumEmulator) -> None:
    ws = await start_answer(emu, query="fault=reset_mid_answer")
    audio = 0
    with pytest.raises(ConnectionClosedError) as exc:
        async for raw in ws:
            audio += json.loads(raw)["type"] == "audio"
    assert exc.value.rcvd is None  # no close frame: an abrupt reset
    assert audio == 3
    await emu.stats.wait_for(lambda s: s.connections[-1].closed_by == "reset")
    assert emu.stats.connections[-1].faults == ["reset_mid_answer"]


async def test_session_limit() -> None:
    async with GradiumEmulator(
        KEY, latency=LatencyModel.instant(), faults=[Fault.SESSION_LIMIT], session_limit_s=0.2
    ) as emu:
        ws = await open_ws(emu)
        await send(ws, type="setup", output_format="pcm", close_ws_on_eos=False)
        msgs = await read_until_closed(ws)
        assert [m["type"] for m in msgs] == ["ready"]
        assert ws.close_code == 1008 and "session limit" in ws.close_reason
        conn = emu.stats.connections[0]
        assert conn.closed_at is not None and 0.2 <= conn.closed_at - conn.opened_at < 1.0


async def test_idle_timeout_resets_on_client_messages() -> None:
    async with GradiumEmulator(
        KEY, latency=LatencyModel.instant(), faults=[Fault.IDLE_TIMEOUT], idle_timeout_s=0.3
    ) as emu:
        ws = await open_ws(emu)
        await send(ws, type="setup", output_format="pcm", close_ws_on_eos=False, client_req_id="a")
        msgs = await read_until_closed(ws)
        assert ws.close_code == 1008 and ws.close_reason == "idle timeout"
        assert msgs[0]["type"] == "ready"
        assert emu.stats.requests[0].left_open


async def test_slow_first_audio() -> None:
    async with GradiumEmulator(
        KEY,
        latency=LatencyModel.instant(),
        faults=[Fault.SLOW_FIRST_AUDIO],
        slow_first_audio_s=0.3,
    ) as emu:
        await speak(emu, ["Slow to start."])
        req = emu.stats.requests[0]
        assert req.first_audio_at is not None and req.eos_at is not None
        assert req.first_audio_at - req.eos_at >= 0.3


async def test_malformed_json_frame(emu: GradiumEmulator) -> None:
    ws = await start_answer(emu, query="fault=malformed_json")
    frames = [raw async for raw in ws]
    bad = [f for f in frames if not f.startswith("{") or not f.endswith("}")]
    assert len(bad) == 1
    assert json.loads(frames[-1])["type"] == "end_of_stream"
    assert ws.close_code == 1000


async def test_unknown_server_messages(emu: GradiumEmulator) -> None:
    emu.fault_next_connection(Fault.UNKNOWN_MESSAGES)
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm_16000")
    await send(ws, type="text", text="Hello there <flush>")
    await send(ws, type="end_of_stream")
    types = [m["type"] for m in await read_until_closed(ws)]
    assert "need_more_text" in types and "flushed" in types
    assert types[-1] == "end_of_stream"


async def test_refuse_connection(emu: GradiumEmulator) -> None:
    emu.fault_next_connection(Fault.REFUSE_CONNECTION, count=2)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as exc:
            await open_ws(emu)
        assert exc.value.response.status_code == 503
    await speak(emu, ["Accepted again."])
    assert [c.closed_by for c in emu.stats.connections] == ["server", "server", "server"]


async def test_unknown_fault_in_query_is_http_400(emu: GradiumEmulator) -> None:
    with pytest.raises(InvalidStatus) as exc:
        await open_ws(emu, query="fault=gremlins")
    assert exc.value.response.status_code == 400


async def test_hold_and_client_close_stops_generation(emu: GradiumEmulator) -> None:
    hold = emu.hold_after_chunks(2, client_req_id="r")
    ws = await open_ws(emu)
    await send(
        ws, type="setup", output_format="pcm_16000", client_req_id="r", close_ws_on_eos=False
    )
    await send(ws, type="text", text=LONG + "<flush>", client_req_id="r")
    await hold.reached.wait()
    assert len(emu.stats.requests[0].audio_chunks) == 2
    await ws.close()
    await emu.stats.wait_for(lambda s: s.connections[0].closed_by == "client")
    hold.release()
    req = emu.stats.requests[0]
    assert req.left_open and not req.finished
    assert len(req.audio_chunks) == 2
    assert req.audio_after_client_gone_s == 0.0


async def test_hold_releases_and_request_completes(emu: GradiumEmulator) -> None:
    hold = emu.hold_after_chunks(1)
    ws = await start_answer(emu)
    await hold.reached.wait()
    assert not emu.stats.requests[0].finished
    hold.release()
    await read_until_closed(ws)
    assert emu.stats.requests[0].finished


async def test_request_error_ends_one_request_and_keeps_the_socket(emu: GradiumEmulator) -> None:
    emu.fault_next_request(Fault.REQUEST_ERROR)
    ws = await open_ws(emu)
    mux = {"output_format": "pcm_16000", "close_ws_on_eos": False}
    await send(ws, type="setup", client_req_id="a", **mux)
    await send(ws, type="text", text=LONG, client_req_id="a")
    await send(ws, type="end_of_stream", client_req_id="a")
    msgs = await read_until_eos(ws, "a")
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == 1011
    assert sum(m["type"] == "audio" for m in msgs) == 3
    # Terminal for that request only: the next request on the same socket is spoken.
    await send(ws, type="setup", client_req_id="b", **mux)
    await send(ws, type="text", text="Still here.", client_req_id="b")
    await send(ws, type="end_of_stream", client_req_id="b")
    assert (await read_until_eos(ws, "b"))[-1]["type"] == "end_of_stream"
    a, b = emu.stats.requests
    assert a.faults == ["request_error"] and a.error and not a.finished
    assert b.faults == [] and b.finished and b.heard_words == ["Still", "here."]
    await ws.close()


async def test_reset_mid_word_cuts_inside_a_timed_word(emu: GradiumEmulator) -> None:
    emu.fault_next_request(Fault.RESET_MID_WORD)
    ws = await start_answer(emu)
    with pytest.raises(ConnectionClosedError):
        async for _ in ws:
            pass
    await emu.stats.wait_for(lambda s: s.connections[-1].closed_by == "reset")
    req = emu.stats.requests[0]
    _, start, stop = req.words[-1]
    assert start < req.audio_s < stop
    # The cut word is not heard; every word before it is.
    assert req.heard_words == [w for w, _, _ in req.words[:-1]]


def test_fault_next_request_takes_only_request_faults(emu: GradiumEmulator) -> None:
    with pytest.raises(ValueError, match="fault_next_connection"):
        emu.fault_next_request(Fault.SESSION_LIMIT)


async def test_outage_refuses_for_a_window_then_accepts(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    emu.start_outage(0.3, drop_open=True)
    with pytest.raises(ConnectionClosedError):
        await ws.recv()
    with pytest.raises(InvalidStatus) as exc:
        await open_ws(emu)
    assert exc.value.response.status_code == 503 and emu.in_outage
    await emu.stats.wait_for(lambda s: s.connections[0].closed_by == "reset")
    await asyncio.sleep(0.3)  # the outage's length is the scenario
    assert not emu.in_outage
    await speak(emu, ["Back again."])
    assert [c.refused for c in emu.stats.connections] == [False, True, False]
