"""rewrite_rules: what the emulator speaks and reports, and its reading of stray '<'."""

from __future__ import annotations

import pytest

from pipecat_gradium.emulator import GradiumEmulator, LatencyModel, WordReports
from pipecat_gradium.emulator.normalize import rules_language, spoken_words

from .conftest import KEY, speak

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    "word, spoken",
    [
        ("24", "twenty four"),
        ("24.", "twenty four."),
        ("8:15", "eight fifteen"),
        ("8:05pm", "eight oh five p m"),
        ("$1,299.99,", "one thousand two hundred and ninety nine dollars ninety nine cents,"),
        ("21st", "twenty first"),
        ("3.14", "three point one four"),
        ("50%", "fifty percent"),
        ("2024-03-05", "March fifth twenty twenty four"),
        ("Dr.", "doctor"),
        ("e.g.", "for example"),
        ("hello,", "hello,"),
        ("12h", "12h"),
    ],
)
def test_english_rules(word, spoken):
    assert " ".join(spoken_words(word, "en")) == spoken
    assert spoken_words(word, None) == [word]


def test_other_languages_and_rule_names():
    assert spoken_words("24", "fr") == ["vingt", "quatre"]
    assert spoken_words("24", "de") == ["vierundzwanzig"]
    assert spoken_words("Dr.", "fr") == ["Dr."]  # abbreviations: English only
    assert rules_language("en") == "en"
    assert rules_language("FR") == "fr"
    assert rules_language("TimeEn,Date") == "en"
    assert rules_language("NumberDe") == "de"
    assert rules_language(None) is None


TEXT = "It costs $5 at 8:15, thanks."


@pytest.mark.parametrize(
    "style, reported",
    [
        ("spoken", "It costs five dollars at eight fifteen, thanks."),
        ("source", TEXT),
    ],
)
async def test_word_reports_carry_spoken_or_source_words(style, reported):
    async with GradiumEmulator(KEY, latency=LatencyModel.instant(), word_reports=style) as emu:
        assert emu.word_reports is WordReports(style)
        msgs = await speak(emu, [TEXT], json_config={"rewrite_rules": "en"})
        words = [m for m in msgs if m["type"] == "text"]
        assert " ".join(m["text"] for m in words) == reported
        # Either way the audio is the rewrite: as long in both styles.
        audio_s = sum(m["stop_s"] - m["start_s"] for m in msgs if m["type"] == "audio")
        starts = [m["start_s"] for m in words]
        assert all(a < b for a, b in zip(starts, starts[1:]))
        assert all(0 <= m["start_s"] < m["stop_s"] <= audio_s + 1e-6 for m in words)
        plain = await speak(emu, [TEXT])  # no rewrite_rules: nothing rewritten
        assert [m["text"] for m in plain if m["type"] == "text"] == TEXT.split()


async def test_stray_less_than_is_read_the_pessimistic_way(emu: GradiumEmulator):
    """Gradium's reading of a '<' that opens no known tag is undocumented: the emulator drops
    everything up to the next '>' (and, with none, the rest), so a client must never send one."""
    msgs = await speak(emu, ["If a < b and c > d then a<3 hearts <x>ok"])
    assert [m["text"] for m in msgs if m["type"] == "text"] == ["If", "a", "d", "then", "a", "ok"]
    escaped = await speak(emu, ["If a \u2039 b and c > d then a\u20393 hearts"])
    spoken = [m["text"] for m in escaped if m["type"] == "text"]
    assert spoken == "If a \u2039 b and c > d then a\u20393 hearts".split()
