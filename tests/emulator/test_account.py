"""The account behind the key: concurrency cap, voice catalogue and voice routes, workers briefly
unavailable, limits that name themselves, and a request that stalls mid-answer."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import pytest
from gradium.client import GradiumClient
from websockets.asyncio.client import ClientConnection

from pipecat_gradium.emulator import Fault, GradiumEmulator, LatencyModel
from pipecat_gradium.emulator.__main__ import build_parser, voices_from

from .conftest import KEY, open_ws, read_until_closed, read_until_eos, send

pytestmark = pytest.mark.timeout(20)

LONG = "This answer is long enough to produce many audio chunks for the fault to fire in. "


def account_emu(**options: Any) -> GradiumEmulator:
    return GradiumEmulator(KEY, latency=LatencyModel.instant(), **options)


async def setup(ws: ClientConnection, rid: str | None = None, **fields: Any) -> None:
    ids = {"client_req_id": rid, "close_ws_on_eos": False} if rid is not None else {}
    await send(ws, type="setup", output_format="pcm_16000", **ids, **fields)


async def answer(ws: ClientConnection, rid: str | None = None, text: str = "Hello there.") -> None:
    ids = {"client_req_id": rid} if rid is not None else {}
    await send(ws, type="text", text=text, **ids)
    await send(ws, type="end_of_stream", **ids)


def types(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in msgs]


# --- the concurrency cap ------------------------------------------------------------------


async def test_cap_on_sockets_refuses_after_the_handshake_and_frees_on_close() -> None:
    async with account_emu(max_sessions=2) as emu:
        first, second = await open_ws(emu), await open_ws(emu)
        third = await open_ws(emu)  # the handshake succeeds: the refusal is a message
        msgs = await read_until_closed(third)
        assert msgs == [
            {
                "type": "error",
                "code": 1008,
                "message": "Concurrency limit exceeded: 2 concurrent sessions allowed",
            }
        ]
        assert third.close_code == 1008 and third.close_reason == "concurrency limit exceeded"
        assert emu.stats.cap_refusals == 1 and len(emu.stats.connections) == 3
        assert [c.cap_refused for c in emu.stats.connections] == [False, False, True]
        # The held sockets still work; closing one frees its slot for the next connection.
        await setup(second)
        await answer(second)
        assert types(await read_until_closed(second))[-1] == "end_of_stream"
        await emu.stats.wait_for(lambda s: s.connections[1].closed_at is not None)
        fourth = await open_ws(emu)
        await setup(fourth)
        await answer(fourth)
        assert types(await read_until_closed(fourth))[-1] == "end_of_stream"
        await first.close()
        assert emu.stats.cap_refusals == 1 and emu.stats.peak_sessions == 2
        await emu.stats.wait_for(lambda s: all(c.closed_at for c in s.connections))
        assert emu.account.in_use == 0


async def test_cap_of_one_names_one_session_and_a_wrong_key_is_not_counted() -> None:
    async with account_emu(max_sessions=1) as emu:
        held = await open_ws(emu)
        wrong = await open_ws(emu, key="wrong")
        assert (await read_until_closed(wrong))[0]["message"] == "invalid API key (x-api-key)"
        over = await open_ws(emu)
        msgs = await read_until_closed(over)
        assert msgs[0]["message"] == "Concurrency limit exceeded: 1 concurrent session allowed"
        assert emu.stats.cap_refusals == 1 and emu.account.in_use == 1
        await held.close()


async def test_cap_on_requests_refuses_the_setup_over_it_with_its_id() -> None:
    async with account_emu(max_sessions=1, cap_counts="requests") as emu:
        a, b = await open_ws(emu), await open_ws(emu)  # open sockets do not count
        await setup(a, "a1")
        assert json.loads(await a.recv())["type"] == "ready"
        await setup(b, "b1")
        msgs = await read_until_closed(b)
        assert msgs == [
            {
                "type": "error",
                "code": 1008,
                "message": "Concurrency limit exceeded: 1 concurrent session allowed",
                "client_req_id": "b1",
            }
        ]
        assert b.close_code == 1008
        # The slot is free by the time the client reads end_of_stream: the next setup fits.
        await answer(a, "a1")
        assert (await read_until_eos(a, "a1"))[-1]["type"] == "end_of_stream"
        await setup(a, "a2")
        await answer(a, "a2")
        assert types(await read_until_eos(a, "a2"))[0] == "ready"
        await a.close()
        refused = emu.stats.requests[1]
        assert refused.client_req_id == "b1" and refused.error is not None
        assert emu.stats.cap_refusals == 1 and emu.stats.connections[1].cap_refused
        assert emu.stats.peak_sessions == 1


async def test_cap_on_requests_frees_the_slot_of_a_socket_the_client_closes() -> None:
    async with account_emu(max_sessions=1, cap_counts="requests") as emu:
        a = await open_ws(emu)
        await setup(a, "a1")
        assert json.loads(await a.recv())["type"] == "ready"
        await a.close()
        await emu.stats.wait_for(lambda s: s.connections[0].closed_at is not None)
        assert emu.account.in_use == 0
        b = await open_ws(emu)
        await setup(b)
        await answer(b)
        assert types(await read_until_closed(b))[-1] == "end_of_stream"
        assert emu.stats.cap_refusals == 0


# --- the voice catalogue ------------------------------------------------------------------


@pytest.mark.parametrize("multiplexed", [False, True])
async def test_unknown_voice_errors_1011_naming_it_after_the_check_then_closes(
    multiplexed: bool,
) -> None:
    async with account_emu(voices=["known-voice"]) as emu:
        ws = await open_ws(emu)
        started = time.monotonic()
        if multiplexed:
            await setup(ws, "r1", voice_id="no-such-voice")
        else:
            await send(ws, type="setup", output_format="pcm", client_req_id="r1",
                       voice_id="no-such-voice")  # fmt: skip
        msgs = await read_until_closed(ws)
        elapsed = time.monotonic() - started
        assert msgs == [
            {
                "type": "error",
                "code": 1011,
                "message": "voice not found: no-such-voice",
                "client_req_id": "r1",
            }
        ]
        assert ws.close_code == 1011 and "no-such-voice" in ws.close_reason
        assert 0.3 <= elapsed < 2.0
        req = emu.stats.requests[0]
        assert req.voice_id == "no-such-voice" and req.ready_at is None
        assert req.error == "voice not found: no-such-voice"


async def test_known_voice_and_no_voice_are_spoken() -> None:
    async with account_emu(voices=["known-voice"]) as emu:
        for fields in ({"voice_id": "known-voice"}, {}, {"voice": "known-voice"}):
            ws = await open_ws(emu)
            await setup(ws, **fields)
            await answer(ws)
            assert types(await read_until_closed(ws))[-1] == "end_of_stream", fields


async def test_without_a_catalogue_every_voice_is_accepted(emu: GradiumEmulator) -> None:
    for voice_id in ("YTpq7expH9539ERJ", "any-id-at-all"):
        ws = await open_ws(emu)
        await setup(ws, voice_id=voice_id)
        await answer(ws)
        assert types(await read_until_closed(ws))[-1] == "end_of_stream"


async def test_sdk_voice_look_up_against_the_catalogue() -> None:
    async with account_emu(voices=["known-voice", "YTpq7expH9539ERJ"]) as emu:
        client = GradiumClient(base_url=emu.base_url, api_key=KEY)
        record = await client.voice_get("known-voice")
        assert record["uid"] == "known-voice" and record["is_catalog"] is False
        assert {"name", "description", "language", "is_pro_clone", "tags"} <= set(record)
        assert (await client.voice_get("YTpq7expH9539ERJ"))["is_catalog"] is True
        with pytest.raises(aiohttp.ClientResponseError) as missing:
            await client.voice_get("no-such-voice")
        assert missing.value.status == 404
        assert missing.value.message == "voice not found: no-such-voice"
        listed = await client.voice_list()  # the account's own voices only
        assert [v["uid"] for v in listed] == ["known-voice"]
        everything = await client.voice_get(include_catalog=True)
        assert [v["uid"] for v in everything] == ["YTpq7expH9539ERJ", "known-voice"]
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            await GradiumClient(base_url=emu.base_url, api_key="wrong").voice_get("known-voice")
        assert refused.value.status == 401
        assert emu.stats.voice_lookups == ["known-voice", "YTpq7expH9539ERJ", "no-such-voice",
                                           "", "", "known-voice"]  # fmt: skip
        # The SDK's own TTS call meets the same catalogue over the socket.
        with pytest.raises(Exception, match="voice not found: no-such-voice"):
            await client.tts(setup={"voice_id": "no-such-voice", "output_format": "pcm"}, text="Hi")


async def test_sdk_voice_look_up_without_a_catalogue(emu: GradiumEmulator) -> None:
    client = GradiumClient(base_url=emu.base_url, api_key=KEY)
    assert (await client.voice_get("YTpq7expH9539ERJ"))["uid"] == "YTpq7expH9539ERJ"
    assert (await client.voice_get("made-up"))["uid"] == "made-up"  # as the socket accepts it
    listed = await client.voice_get(include_catalog=True)
    assert [v["uid"] for v in listed] == ["YTpq7expH9539ERJ", "_6Aslh2DxfmnRLmP"]


# --- workers briefly unavailable ----------------------------------------------------------


async def test_retry_for_s_absorbs_a_window_without_workers() -> None:
    async with account_emu() as emu:
        # The window starts once the socket is open, so a slow handshake does not eat into it.
        ws = await open_ws(emu)
        started = time.monotonic()
        emu.no_workers_for(0.3)
        await setup(ws, retry_for_s=3)
        await answer(ws)
        msgs = await read_until_closed(ws)
        assert types(msgs)[0] == "ready" and types(msgs)[-1] == "end_of_stream"
        assert time.monotonic() - started >= 0.25
        req = emu.stats.requests[0]
        assert req.retry_for_s == 3.0 and req.worker_wait_s is not None
        assert 0.2 <= req.worker_wait_s < 2.0 and req.error is None


async def test_window_longer_than_retry_for_s_errors_before_any_audio() -> None:
    async with account_emu() as emu:
        emu.no_workers_for(None)
        ws = await open_ws(emu)
        await send(ws, type="setup", output_format="pcm", client_req_id="r1", retry_for_s=0.2)
        await answer(ws, "r1")
        msgs = await read_until_closed(ws)
        assert msgs == [
            {"type": "error", "code": 1011, "message": "no worker available", "client_req_id": "r1"}
        ]
        assert ws.close_code == 1011
        req = emu.stats.requests[0]
        assert req.retry_for_s == 0.2 and req.worker_wait_s == pytest.approx(0.2, abs=0.15)
        assert req.error == "no worker available" and not req.audio_chunks


async def test_no_worker_ends_only_the_request_on_a_multiplexed_socket() -> None:
    async with account_emu() as emu:
        emu.no_workers_for(None)
        ws = await open_ws(emu)
        await setup(ws, "a")  # no retry_for_s: no wait at all
        assert json.loads(await ws.recv()) == {
            "type": "error",
            "code": 1011,
            "message": "no worker available",
            "client_req_id": "a",
        }
        emu.workers_back()
        await setup(ws, "b")
        await answer(ws, "b")
        assert types(await read_until_eos(ws, "b"))[0] == "ready"
        await ws.close()
        assert emu.stats.requests[0].retry_for_s is None
        assert emu.stats.requests[0].worker_wait_s == pytest.approx(0.0, abs=0.1)


async def test_workers_back_wakes_a_waiting_setup_at_once() -> None:
    async with account_emu() as emu:
        emu.no_workers_for(None)
        ws = await open_ws(emu)
        await setup(ws, retry_for_s=10)
        await emu.stats.wait_for(lambda s: len(s.requests) == 1)
        emu.workers_back()
        assert json.loads(await asyncio.wait_for(ws.recv(), 2.0))["type"] == "ready"
        await ws.close()


async def test_no_worker_fault_targets_one_setup() -> None:
    async with account_emu(no_worker_s=0.3) as emu:
        emu.fault_next_request(Fault.NO_WORKER)
        ws = await open_ws(emu)
        await setup(ws, "a", retry_for_s=0.05)
        assert json.loads(await ws.recv())["message"] == "no worker available"
        await setup(ws, "b")  # the next setup finds a worker at once
        await answer(ws, "b")
        assert types(await read_until_eos(ws, "b"))[0] == "ready"
        await ws.close()
        assert emu.stats.requests[0].faults == ["no_worker"]


async def test_bad_retry_for_s_is_a_bad_setup(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm", retry_for_s="soon")
    msgs = await read_until_closed(ws)
    assert msgs[0]["code"] == 1008 and "retry_for_s" in msgs[0]["message"]


async def test_no_workers_over_http() -> None:
    async with account_emu() as emu, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{emu.port}/_emulator/no_workers"
        async with http.post(url, json={"seconds": None}) as r:
            assert r.status == 200
        ws = await open_ws(emu)
        await setup(ws)
        assert json.loads(await ws.recv())["message"] == "no worker available"
        async with http.post(url, json={"seconds": 0}) as r:
            assert r.status == 200
        async with http.post(url, json={"seconds": -1}) as r:
            assert r.status == 400
        ws = await open_ws(emu)
        await setup(ws)
        await answer(ws)
        assert types(await read_until_closed(ws))[-1] == "end_of_stream"


# --- limits that name themselves ----------------------------------------------------------


async def test_session_limit_sends_an_error_naming_it_before_the_close() -> None:
    async with account_emu(
        faults=[Fault.SESSION_LIMIT], session_limit_s=0.2, limit_error_frames=True
    ) as emu:
        ws = await open_ws(emu)
        await setup(ws, "a")
        msgs = await read_until_closed(ws)
        assert msgs[1:] == [
            {
                "type": "error",
                "code": 1008,
                "message": "session limit reached: a session lasts at most 0.2 s",
            }
        ]
        assert ws.close_code == 1008 and ws.close_reason == "session limit reached"


async def test_idle_timeout_sends_an_error_naming_it_before_the_close() -> None:
    async with account_emu(
        faults=[Fault.IDLE_TIMEOUT], idle_timeout_s=0.2, limit_error_frames=True
    ) as emu:
        ws = await open_ws(emu)
        msgs = await read_until_closed(ws)
        assert msgs == [
            {
                "type": "error",
                "code": 1008,
                "message": "idle timeout: no message from the client for 0.2 s",
            }
        ]
        assert ws.close_code == 1008 and ws.close_reason == "idle timeout"


# --- a stall mid-answer -------------------------------------------------------------------


async def test_stall_mid_answer_sends_nothing_more_and_leaves_the_socket_open() -> None:
    async with account_emu(fault_after_chunks=3) as emu:
        emu.fault_next_request(Fault.STALL_MID_ANSWER)
        ws = await open_ws(emu)
        await setup(ws, "a")
        await answer(ws, "a", LONG)
        await emu.stats.wait_for(
            lambda s: bool(s.requests) and s.requests[0].stalled_at is not None
        )
        msgs = []
        while True:  # everything sent before the stall, then silence
            try:
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            except TimeoutError:
                break
        assert types(msgs).count("audio") == 3 and "end_of_stream" not in types(msgs)
        # The socket is alive: another request on it is answered in full.
        await setup(ws, "b")
        await answer(ws, "b")
        assert types(await read_until_eos(ws, "b"))[-1] == "end_of_stream"
        await ws.close()
        await emu.stats.wait_for(lambda s: s.connections[0].closed_by == "client")
        stalled = emu.stats.requests[0]
        assert len(stalled.audio_chunks) == 3 and stalled.faults == ["stall_mid_answer"]
        assert stalled.left_open and not stalled.finished and stalled.error is None


# --- the command line ---------------------------------------------------------------------


def test_cli_options_build_the_account() -> None:
    args = build_parser().parse_args(
        ["--max-sessions", "2", "--cap-counts", "requests", "--voice", "a,b", "--voice", "c",
         "--voice-check-s", "0.1", "--no-worker-s", "0.5", "--limit-error-frames"]
    )  # fmt: skip
    assert (args.max_sessions, args.cap_counts) == (2, "requests")
    assert voices_from(args) == ["a", "b", "c"]
    assert (args.voice_check_s, args.no_worker_s, args.limit_error_frames) == (0.1, 0.5, True)
    defaults = build_parser().parse_args([])
    assert defaults.max_sessions is None and voices_from(defaults) is None
    assert not defaults.limit_error_frames and defaults.cap_counts == "sockets"


async def test_cli_account_in_another_process() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipecat_gradium.emulator", "--port", "0", "--handshake-ms", "0",
        "--max-sessions", "1", "--voice", "known-voice",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 20)
        base = (await proc.stdout.readline()).decode().strip().removeprefix("base_url=")
        client = GradiumClient(base_url=base, api_key=KEY)
        assert (await client.voice_get("known-voice"))["uid"] == "known-voice"
        with pytest.raises(aiohttp.ClientResponseError, match="voice not found"):
            await client.voice_get("other")
        port = int(base.split(":")[2].split("/")[0])
        emu = GradiumEmulator(port=port)  # only used for its URL helpers
        held = await open_ws(emu)
        over = await open_ws(emu)
        assert (await read_until_closed(over))[0]["code"] == 1008 and over.close_code == 1008
        await held.close()
    finally:
        proc.terminate()
        await proc.wait()
