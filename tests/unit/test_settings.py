"""``GradiumStreamingTTSService.Tuning`` rejects values that would make the service hang or spin."""

import dataclasses

import pytest

from pipecat_gradium import GradiumStreamingTTSService

Tuning = GradiumStreamingTTSService.Tuning


def test_defaults_are_valid_and_the_low_buffer_flush_is_on():
    tuning = Tuning()
    assert tuning.low_buffer_flush_s > 0
    assert tuning.loaded_first_chunk_words > 0


@pytest.mark.parametrize(
    "field",
    [
        "connect_timeout_s",
        "first_audio_timeout_s",
        "stall_timeout_s",
        "limit_wait_s",
        "probe_backoff_s",
        "probe_backoff_max_s",
        "max_socket_age_s",
    ],
)
def test_a_timeout_must_be_positive(field: str):
    with pytest.raises(ValueError, match=field):
        Tuning(**{field: 0})


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_chunk_chars", 0),
        ("audio_batch_s", -0.1),
        ("retry_for_s", -1.0),
        ("loaded_first_chunk_words", -1),
        ("low_buffer_flush_s", -0.1),
    ],
)
def test_a_size_must_not_be_negative(field: str, value: float):
    with pytest.raises(ValueError, match=field):
        Tuning(**{field: value})


@pytest.mark.parametrize(
    "field", ["audio_batch_s", "loaded_first_chunk_words", "low_buffer_flush_s"]
)
def test_zero_turns_a_feature_off(field: str):
    assert getattr(dataclasses.replace(Tuning(), **{field: 0}), field) == 0
