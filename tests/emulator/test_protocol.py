"""Each rule of gradium-protocol.md, over a real socket to the emulator."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from pipecat_gradium.emulator import GradiumEmulator

from .conftest import (
    audio_of,
    open_ws,
    pcm16,
    read_until_closed,
    read_until_eos,
    send,
    speak,
    words_of,
)

pytestmark = pytest.mark.timeout(20)

SENTENCE = ["Hello there, ", "this is ", "a small test. "]


@pytest.mark.parametrize("path", ["/api/speech/tts", "/speech/tts"])
async def test_both_routes_serve_tts(emu: GradiumEmulator, path: str) -> None:
    ws = await open_ws(emu, path=path)
    await send(ws, type="setup", output_format="pcm")
    await send(ws, type="text", text="Hello world.")
    await send(ws, type="end_of_stream")
    msgs = await read_until_closed(ws)
    assert [m["type"] for m in msgs][0] == "ready"
    assert msgs[-1]["type"] == "end_of_stream"
    assert emu.stats.connections[-1].path == path


async def test_unknown_route_is_404(emu: GradiumEmulator) -> None:
    with pytest.raises(InvalidStatus) as exc:
        await open_ws(emu, path="/api/speech/nope")
    assert exc.value.response.status_code == 404


@pytest.mark.parametrize("key", ["wrong-key", None])
async def test_bad_or_missing_key_gets_1008(emu: GradiumEmulator, key: str | None) -> None:
    ws = await open_ws(emu, key=key)
    msgs = await read_until_closed(ws)
    assert msgs == [{"type": "error", "message": msgs[0]["message"], "code": 1008}]
    assert "API key" in msgs[0]["message"]
    assert ws.close_code == 1008
    assert emu.stats.connections[-1].closed_by == "server"


async def test_setup_must_come_first(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="text", text="Hello")
    msgs = await read_until_closed(ws)
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == 1008
    assert "setup must come first" in msgs[0]["message"]
    assert ws.close_code == 1008


async def test_ready_has_every_field(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm_24000", client_req_id="r1")
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready"
    for field in ("request_id", "model_name", "sample_rate", "frame_size"):
        assert ready[field]
    assert ready["audio_stream_names"] and ready["text_stream_names"]
    assert ready["client_req_id"] == "r1"
    assert ready["sample_rate"] == 24000 and ready["frame_size"] == 1920
    await ws.close()


async def test_text_is_concatenated_exactly_as_sent(emu: GradiumEmulator) -> None:
    # "wor" + "ld" is one word: the client supplies the spaces.
    msgs = await speak(emu, ["Hel", "lo wor", "ld, ", "again"])
    assert words_of(msgs) == ["Hello", "world,", "again"]
    assert emu.stats.requests[-1].texts == ["Hel", "lo wor", "ld, ", "again"]
    assert emu.stats.total_text_messages == 4


async def test_flush_releases_held_words_without_eos(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(
        ws, type="setup", output_format="pcm_16000", client_req_id="a", close_ws_on_eos=False
    )
    await send(ws, type="text", text="one two three ", client_req_id="a")
    # With a look-ahead of 2, only "one" may be spoken until more text or a flush.
    await emu.stats.wait_for(lambda s: bool(s.requests) and len(s.requests[-1].words) >= 1)
    assert [w for w, _, _ in emu.stats.requests[-1].words] == ["one"]
    await send(ws, type="text", text="<flush>", client_req_id="a")
    await emu.stats.wait_for(lambda s: len(s.requests[-1].words) == 3)
    assert [w for w, _, _ in emu.stats.requests[-1].words] == ["one", "two", "three"]
    assert not emu.stats.requests[-1].finished
    await ws.close()


async def test_break_tag_becomes_silence(emu: GradiumEmulator) -> None:
    plain = pcm16(await speak(emu, ["Hello world. ", "Goodbye now."]))
    paused = pcm16(await speak(emu, ['Hello world. <break time="1.5s" /> ', "Goodbye now."]))
    # The break replaces the short pause eSpeak puts between the two sentences.
    extra = (paused.size - plain.size) / 16000
    assert 1.0 < extra < 1.7
    # A long run of digital silence exists in the paused audio.
    silent = (abs(paused.astype(int)) < 50).astype(int)
    longest = max(len(run) for run in "".join(map(str, silent)).split("0"))
    assert int(1.5 * 16000) <= longest <= int(2.0 * 16000)


async def test_break_is_clamped_and_other_tags_stripped(emu: GradiumEmulator) -> None:
    msgs = await speak(emu, ['Hi <break time="9s"/> there <emphasis>you</emphasis> ok'])
    assert words_of(msgs) == ["Hi", "there", "you", "ok"]
    # 9 s is clamped to 2.0 s: audio stays well under 9 s.
    assert pcm16(msgs).size / 16000 < 5.0


async def test_request_without_text_ends_with_no_audio(emu: GradiumEmulator) -> None:
    msgs = await speak(emu, [])
    assert [m["type"] for m in msgs] == ["ready", "end_of_stream"]


async def test_close_ws_on_eos_false_allows_sequential_reuse(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    for text in ("First answer.", "Second answer."):
        await send(ws, type="setup", output_format="pcm_16000", close_ws_on_eos=False)
        await send(ws, type="text", text=text)
        await send(ws, type="end_of_stream")
        msgs = await read_until_eos(ws)
        assert msgs[0]["type"] == "ready"
        assert words_of(msgs) == text.split()
    assert len(emu.stats.connections) == 1 and emu.stats.connections[0].closed_at is None
    await ws.close()
    await emu.stats.wait_for(lambda s: s.connections[0].closed_by == "client")


async def test_multiplexing_routes_by_client_req_id(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    for rid in ("a", "b"):
        await send(
            ws, type="setup", output_format="pcm_16000", client_req_id=rid, close_ws_on_eos=False
        )
    await send(ws, type="text", text="Alpha beta gamma.", client_req_id="a")
    await send(ws, type="text", text="One two three.", client_req_id="b")
    await send(ws, type="end_of_stream", client_req_id="b")
    await send(ws, type="end_of_stream", client_req_id="a")
    msgs: list[dict] = []
    while sum(m["type"] == "end_of_stream" for m in msgs) < 2:
        msgs.append(json.loads(await ws.recv()))
    # Every server message carries its request's id.
    assert all(m.get("client_req_id") in ("a", "b") for m in msgs)
    assert words_of([m for m in msgs if m["client_req_id"] == "a"]) == ["Alpha", "beta", "gamma."]
    assert words_of([m for m in msgs if m["client_req_id"] == "b"]) == ["One", "two", "three."]
    await ws.close()


async def test_unscoped_eos_on_multiplexed_socket_closes_when_all_finish(
    emu: GradiumEmulator,
) -> None:
    ws = await open_ws(emu)
    for rid in ("a", "b"):
        await send(
            ws, type="setup", output_format="pcm_16000", client_req_id=rid, close_ws_on_eos=False
        )
        await send(ws, type="text", text=f"Request {rid} speaking.", client_req_id=rid)
    await send(ws, type="end_of_stream")
    msgs = await read_until_closed(ws)
    assert ws.close_code == 1000
    assert sorted(m["client_req_id"] for m in msgs if m["type"] == "end_of_stream") == ["a", "b"]
    assert all(r.finished and not r.left_open for r in emu.stats.requests)


async def test_duplicate_active_id_is_an_error_for_that_request_only(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(
        ws, type="setup", output_format="pcm_16000", client_req_id="x", close_ws_on_eos=False
    )
    assert json.loads(await ws.recv())["type"] == "ready"
    await send(
        ws, type="setup", output_format="pcm_16000", client_req_id="x", close_ws_on_eos=False
    )
    err = json.loads(await ws.recv())
    assert err["type"] == "error" and err["code"] == 1008 and err["client_req_id"] == "x"
    # The socket and the first request live on.
    await send(ws, type="text", text="Still here.", client_req_id="x")
    await send(ws, type="end_of_stream", client_req_id="x")
    msgs = await read_until_eos(ws, "x")
    assert words_of(msgs) == ["Still", "here."]
    await ws.close()


@pytest.mark.parametrize(
    ("fmt", "rate", "width"),
    [
        ("pcm", 48000, 2),
        ("pcm_8000", 8000, 2),
        ("pcm_16000", 16000, 2),
        ("pcm_22050", 22050, 2),
        ("pcm_24000", 24000, 2),
        ("pcm_44100", 44100, 2),
        ("pcm_48000", 48000, 2),
        ("ulaw_8000", 8000, 1),
        ("alaw_8000", 8000, 1),
    ],
)
async def test_output_formats_send_80ms_chunks(
    emu: GradiumEmulator, fmt: str, rate: int, width: int
) -> None:
    msgs = await speak(emu, ["Testing the format."], output_format=fmt)
    assert msgs[0]["sample_rate"] == rate
    chunks = [m for m in msgs if m["type"] == "audio"]
    sizes = [len(__import__("base64").b64decode(m["audio"])) for m in chunks]
    frame = round(rate * 0.08) * width
    assert sizes[:-1] == [frame] * (len(sizes) - 1) and 0 < sizes[-1] <= frame
    for prev, cur in zip(chunks, chunks[1:]):
        assert cur["start_s"] == pytest.approx(prev["stop_s"])
        assert cur["stream_id"] == 0


async def test_wav_starts_with_a_header(emu: GradiumEmulator) -> None:
    data = audio_of(await speak(emu, ["A wave file."], output_format="wav"))
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[24:28], "little") == 48000


@pytest.mark.parametrize("fmt", ["opus", "mp3", "pcm_11025"])
async def test_unsupported_format_is_a_clear_1008(emu: GradiumEmulator, fmt: str) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format=fmt)
    msgs = await read_until_closed(ws)
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == 1008
    assert fmt in msgs[0]["message"] and ws.close_code == 1008


@pytest.mark.parametrize(
    "config",
    [
        {"temp": 0.3, "cfg_coef": 2.5, "padding_bonus": -1.0, "rewrite_rules": "en"},
        json.dumps({"temp": 1.4, "rewrite_rules": "TimeEn,Date"}),
    ],
)
async def test_json_config_as_object_or_string(emu: GradiumEmulator, config: object) -> None:
    msgs = await speak(emu, ["Configured."], json_config=config)
    assert words_of(msgs) == ["Configured."]


@pytest.mark.parametrize(
    "config",
    [{"temp": 2.0}, {"cfg_coef": 0.5}, {"padding_bonus": 5}, {"rewrite_rules": "no way!"}, "{bad"],
)
async def test_json_config_out_of_range_is_1008(emu: GradiumEmulator, config: object) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm", json_config=config)
    msgs = await read_until_closed(ws)
    assert msgs[0]["type"] == "error" and msgs[0]["code"] == 1008
    assert "json_config" in msgs[0]["message"]


async def test_padding_bonus_changes_speaking_rate(emu: GradiumEmulator) -> None:
    text = ["The quick brown fox jumps over the lazy dog."]
    fast = pcm16(await speak(emu, text, json_config={"padding_bonus": -3.0})).size
    normal = pcm16(await speak(emu, text)).size
    slow = pcm16(await speak(emu, text, json_config={"padding_bonus": 3.0})).size
    assert fast < 0.8 * normal and slow > 1.2 * normal


async def test_unknown_client_message_type_is_rejected(emu: GradiumEmulator) -> None:
    ws = await open_ws(emu)
    await send(ws, type="setup", output_format="pcm")
    await ws.recv()
    await send(ws, type="cancel")
    msgs = await read_until_closed(ws)
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == 1008
    assert "'cancel'" in msgs[-1]["message"]


async def test_every_message_carries_client_req_id(emu: GradiumEmulator) -> None:
    msgs = await speak(emu, ["Identify me please."], client_req_id="rid-7")
    assert msgs and all(m["client_req_id"] == "rid-7" for m in msgs)
    assert {m["type"] for m in msgs} == {"ready", "audio", "text", "end_of_stream"}


async def test_word_text_messages_precede_their_audio(emu: GradiumEmulator) -> None:
    msgs = await speak(emu, ["Words arrive no later than their audio chunk."])
    sent_until = 0.0
    for m in msgs:
        if m["type"] == "audio":
            sent_until = m["stop_s"]
        elif m["type"] == "text":
            assert m["start_s"] >= sent_until - 1e-9 or m["start_s"] < sent_until + 0.08
            assert m["start_s"] >= 0 and m["stop_s"] >= m["start_s"]
    # Each word's message is sent before the chunk holding its start.
    audio_stops = [m["stop_s"] for m in msgs if m["type"] == "audio"]
    seen_audio = 0.0
    for m in msgs:
        if m["type"] == "audio":
            seen_audio = m["stop_s"]
        elif m["type"] == "text":
            assert m["start_s"] >= seen_audio - 1e-9
    assert audio_stops
