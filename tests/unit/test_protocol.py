"""Gradium message building and parsing, and the per-request record: pure logic, no sockets."""

import base64
import json

import pytest

from pipecat_gradium.protocol import (
    Audio,
    EndOfStream,
    ProtocolError,
    Ready,
    ServerError,
    Unknown,
    Word,
    build_json_config,
    decode_audio,
    end_of_stream_message,
    output_format_for_rate,
    parse_server_message,
    setup_message,
    text_message,
)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_offered_rates_are_asked_for_directly(rate):
    assert output_format_for_rate(rate) == (f"pcm_{rate}", rate)


@pytest.mark.parametrize(("rate", "asked"), [(11025, 16000), (32000, 44100), (96000, 48000)])
def test_other_rates_ask_for_the_next_rate_up(rate, asked):
    assert output_format_for_rate(rate) == (f"pcm_{asked}", asked)


def test_setup_message_multiplexes_and_keeps_the_socket():
    msg = json.loads(
        setup_message(
            client_req_id="r1",
            voice_id="v",
            output_format="pcm_24000",
            json_config={"temp": 0.5},
            pronunciation_id="p",
        )
    )
    assert msg == {
        "type": "setup",
        "model_name": "default",
        "voice_id": "v",
        "output_format": "pcm_24000",
        "client_req_id": "r1",
        "close_ws_on_eos": False,
        "json_config": {"temp": 0.5},
        "pronunciation_id": "p",
    }


def test_text_and_end_of_stream_messages_carry_the_request_id():
    assert json.loads(text_message("Hi there. ", "r1")) == {
        "type": "text",
        "text": "Hi there. ",
        "client_req_id": "r1",
    }
    assert json.loads(end_of_stream_message("r1")) == {
        "type": "end_of_stream",
        "client_req_id": "r1",
    }


def test_json_config_keeps_only_set_values_and_checks_ranges():
    assert build_json_config() == {}
    assert build_json_config(temp=0.0, padding_bonus=-4.0, rewrite_rules="en") == {
        "temp": 0.0,
        "padding_bonus": -4.0,
        "rewrite_rules": "en",
    }
    for kwargs in ({"temp": 1.5}, {"cfg_coef": 0.5}, {"padding_bonus": 4.5}):
        with pytest.raises(ValueError, match="out of range"):
            build_json_config(**kwargs)


def test_parse_every_server_message():
    pcm = b"\x01\x00\x02\x00"
    audio = {"type": "audio", "audio": base64.b64encode(pcm).decode(), "client_req_id": "r"}
    assert parse_server_message(json.dumps({**audio, "start_s": 0.0, "stop_s": 0.08})) == Audio(
        "r", pcm, 0.0, 0.08
    )
    word = {"type": "text", "text": "Hi", "start_s": 0.1, "stop_s": 0.3, "client_req_id": "r"}
    assert parse_server_message(json.dumps(word)) == Word("r", "Hi", 0.1, 0.3)
    ready = {"type": "ready", "request_id": "x", "sample_rate": 24000, "client_req_id": "r"}
    assert parse_server_message(json.dumps(ready)) == Ready("r", "x", 24000)
    assert parse_server_message('{"type":"end_of_stream"}') == EndOfStream(None)
    err = parse_server_message('{"type":"error","message":"Invalid API key","code":1008}')
    assert err == ServerError(None, "Invalid API key", 1008) and err.is_auth
    assert not ServerError("r", "internal failure", 1011).is_auth
    assert isinstance(parse_server_message('{"type":"need_more_text"}'), Unknown)


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1, 2]", '{"no_type": 1}', '{"type": "audio"}', '{"type":"text","text":"x"}'],
)
def test_malformed_frames_raise_protocol_error(raw):
    with pytest.raises(ProtocolError):
        parse_server_message(raw)


def test_audio_decodes_strict_base64_and_what_the_lenient_reader_accepted():
    pcm = bytes(range(256)) * 30
    encoded = base64.b64encode(pcm).decode()
    # A frame received as bytes reads the same as one received as text.
    raw = json.dumps({"type": "audio", "audio": encoded, "client_req_id": "r"})
    assert parse_server_message(raw.encode()) == Audio("r", pcm, 0.0, 0.0)
    # Line breaks are not base64; the stdlib reader skipped them, and so does this one.
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_audio(wrapped) == pcm


@pytest.mark.parametrize("payload", ["abc", "a===", 12])
def test_audio_that_is_not_base64_is_a_protocol_error(payload):
    raw = json.dumps({"type": "audio", "audio": payload, "client_req_id": "r"})
    with pytest.raises(ProtocolError, match="bad 'audio' message"):
        parse_server_message(raw)
