"""Attempt: which words count as heard, and what a continuation re-sends."""

import pytest

from pipecat_gradium.alignment import source_words
from pipecat_gradium.attempt import Attempt


def request_with(texts: list[str], words: list[tuple[str, float, float]], audio_s: float):
    req = Attempt(
        "r", None, number=1, gradium_rate=24000, output_rate=24000,  # type: ignore[arg-type]
    )  # fmt: skip
    req.texts = list(texts)
    for w in words:
        req.add_word(*w)
    req.audio_s = audio_s
    return req


@pytest.mark.parametrize(
    ("texts", "heard", "rest"),
    [
        (['Wait<break time="100ms"/>now, we will go. '], 2, "we will go. "),
        (["The forecast <flush>", "for tomorrow  is\nsunny. "], 3, "tomorrow  is\nsunny. "),
        (["one<flush>two three "], 1, "two three "),
        (['a <break time="1s"/> b c '], 1, "b c "),
        (["all of it. "], 3, ""),
    ],
)
def test_unspoken_text_counts_words_the_way_gradium_splits_them(texts, heard, rest):
    # Gradium reports the words it speaks (the alignment maps them back onto the source).
    spoken = [w.text for w in source_words("".join(texts))][:heard]
    words = [(w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(spoken)]
    req = request_with(texts, words, audio_s=heard * 0.5)
    assert req.heard == heard
    assert req.unspoken_text() == rest


def test_a_word_counts_as_heard_only_when_its_audio_has_fully_arrived():
    req = request_with(["Hello there friend. "], [("Hello", 0.0, 0.3), ("there", 0.3, 0.6)], 0.45)
    assert req.heard == 1
    assert req.take_heard() == [("Hello", 0.0)]
    assert req.unspoken_text() == "there friend. "
    req.audio_s = 0.6
    assert req.take_heard() == [("there", 0.3)]


def test_heard_words_come_one_per_source_word_at_their_own_times():
    # "24 dollars", said "twenty four dollars": "dollars" is known as the text's only at
    # "last", and still comes alone, at its own report's start; "fact here" reported as one
    # word is spread over that report by letters.
    words = [
        ("It", 0.0, 0.2),
        ("twenty", 0.2, 0.5),
        ("four", 0.5, 0.8),
        ("dollars", 0.8, 1.2),
        ("last", 1.2, 1.5),
        ("facthere", 1.5, 2.3),
    ]
    req = request_with(["It 24 dollars last fact here "], words, audio_s=2.3)
    req.time_offset_s = 10.0
    heard = req.take_heard()
    assert [w for w, _ in heard] == ["It", "24", "dollars", "last", "fact", "here"]
    assert [round(t, 3) for _, t in heard] == [10.0, 10.2, 10.8, 11.2, 11.5, 11.9]
