"""Tests for pipecat_gradium.alignment: Gradium's word reports onto the source text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_gradium.alignment import (
    REWRITE_WORDS,
    WordAligner,
    rewritable,
    source_words,
    word_key,
)
from pipecat_gradium.emulator.normalize import spoken_words

ANSWER = "Your order of 24 items costs $1,299.99, it ships at 8:15 on the 21st. Dr. Smith agrees."


def align(text, reports, already_shown=0):
    """The aligner, and the source words each report shows (a list per report)."""
    aligner, timed = align_timed(text, reports, already_shown)
    return aligner, [[t for t, _, _ in words] for words in timed]


def align_timed(text, reports, already_shown=0):
    """The aligner, and per report the words it shows as (text, report, fraction)."""
    aligner = WordAligner(already_shown=already_shown)
    aligner.add_text(text)
    timed = [[(w.text, w.report, w.fraction) for w in aligner.add_report(r)] for r in reports]
    return aligner, timed


def flat(shown):
    return [t for words in shown for t in words]


def spoken_reports(text, lang="en"):
    """One report per spoken word, as Gradium may send them with rewrite_rules."""
    groups = [spoken_words(w.text, lang) for w in source_words(text)]
    return [s for g in groups for s in g], [len(g) for g in groups]


def test_source_words_split_at_whitespace_and_gradium_tags():
    text = 'Wait<break time="100ms"/>now, we <flush>go a<3 <spell>x</spell>'
    assert [w.text for w in source_words(text)] == [
        "Wait",
        "now,",
        "we",
        "go",
        "a<3",
        "<spell>x</spell>",
    ]
    assert word_key("Don't,") == "dont"
    assert word_key("🙂") == ""


def test_source_reports_show_each_word_once():
    words = [w.text for w in source_words(ANSWER)]
    aligner, shown = align(ANSWER, words)
    assert shown == [[w] for w in words]
    assert aligner.heard() == len(words)
    assert aligner.unspoken_text() == ""


def test_spoken_reports_show_the_llm_words():
    reports, _ = spoken_reports(ANSWER)
    assert "twenty" in reports and "$1,299.99" not in reports
    aligner, shown = align(ANSWER, reports)
    assert flat(shown) == [w.text for w in source_words(ANSWER)]
    # The first spoken word of a rewrite shows the source word; the rest show nothing.
    assert shown[reports.index("twenty") : reports.index("twenty") + 3] == [["24"], [], ["items"]]


@pytest.mark.parametrize(
    "reports, heard, resend",
    [
        # Cut inside the rewrite of "24": "24" is re-sent ("twenty" said twice).
        (["Your", "order", "of", "twenty"], 3, "24 items costs"),
        # Whole rewrite heard, next word not started yet: "24" may be unfinished, re-sent.
        (["Your", "order", "of", "twenty", "four"], 3, "24 items costs"),
        # The next word started: "24" was heard in full.
        (["Your", "order", "of", "twenty", "four", "items"], 5, "costs"),
        (["Your", "order", "of", "twenty", "four", "items", "costs"], 6, "$1,299.99, it"),
        # Source-style reports: an exact match is heard at once.
        (["Your", "order", "of", "24"], 4, "items costs"),
    ],
)
def test_unspoken_text_after_a_cut(reports, heard, resend):
    aligner, _ = align(ANSWER, reports)
    assert aligner.heard() == heard
    assert aligner.unspoken_text().startswith(resend)


def test_unspoken_text_counts_only_reports_heard_and_drops_flush():
    text = 'One two, <flush>three<break time="1s" /> four five'
    aligner, _ = align(text, ["One", "two,", "three", "four"])
    assert aligner.unspoken_text(reports=2) == 'three<break time="1s" /> four five'
    assert aligner.unspoken_text(reports=0) == 'One two, three<break time="1s" /> four five'
    assert aligner.unspoken_text() == "five"


def test_tags_touching_words_keep_the_count():
    # A tag with no space around it still separates two words.
    text = 'Wait<break time="100ms"/>now, we will go'
    aligner, shown = align(text, ["Wait", "now,"])
    assert shown == [["Wait"], ["now,"]]
    assert aligner.unspoken_text() == "we will go"


def test_symbols_and_emoji_are_shown_with_the_next_word():
    text = "Great 🙂 - thanks & bye"
    aligner, shown = align_timed(text, ["Great", "thanks", "and", "bye"])
    # Pipecat follows letters and digits only: a word with none leads the next word that has
    # some, at that word's time, whether Gradium dropped it or spoke it ("and" for "&").
    assert shown == [[("Great", 0, 0.0)], [("🙂 - thanks", 1, 0.0)], [], [("& bye", 3, 0.0)]]
    assert aligner.heard() == 6


def test_a_bare_less_than_is_not_shown():
    # Pipecat reads a "<" as a tag's start; it completes the context with it by itself.
    _, shown = align("If a \u2039 b and c > d", ["If", "a", "\u2039", "b", "and", "c", ">", "d"])
    assert shown == [["If"], ["a"], [], ["b"], ["and"], ["c"], [], ["> d"]]


def test_a_word_reported_in_parts_and_words_reported_as_one():
    aligner, shown = align_timed("a well-known fact here", ["a", "well", "known", "facthere"])
    # Two words in one report: each its own entry, spread over the report by their letters.
    assert shown == [
        [("a", 0, 0.0)],
        [("well-known", 1, 0.0)],
        [],
        [("fact", 3, 0.0), ("here", 3, 0.5)],
    ]
    assert aligner.heard() == 4


def test_punctuation_reports_stand_for_nothing():
    aligner, shown = align("Hi, you", ["Hi", ",", "you"])
    assert shown == [["Hi,"], [], ["you"]]


def test_continuation_does_not_show_the_cut_word_twice():
    first, _ = align(ANSWER, ["Your", "order", "of", "twenty"])
    assert first.heard() == 3 and first.shown == 4
    resend = first.unspoken_text()
    second, shown = align(
        resend, ["twenty", "four", "items"], already_shown=first.shown - first.heard()
    )
    assert shown == [[], [], ["items"]]


def test_reports_past_the_text_show_nothing():
    _, shown = align("Hi", ["Hi", "extra"])
    assert shown == [["Hi"], []]


def test_text_added_in_messages():
    aligner = WordAligner()
    aligner.add_text("It is ")
    assert [w.text for w in aligner.add_report("It")] == ["It"]
    aligner.add_text("8:15 now.")
    shown = [[w.text for w in aligner.add_report(r)] for r in ["is", "eight", "fifteen", "now."]]
    assert shown == [["is"], ["8:15"], [], ["now."]]


# -- properties: none lost, at most one repeated, each word shown once -------------------

PIECES = [
    "Hello",
    "it",
    "costs",
    "twenty",
    "four",
    "one",
    "24",
    "8:15",
    "8:05pm",
    "$1,299.99",
    "€5",
    "21st",
    "3.14",
    "50%",
    "2024-03-05",
    "Dr.",
    "e.g.",
    "well-known",
    "items.",
    "🙂",
    "-",
    "&",
    "<flush>",
    '<break time="1s" />',
]
PLAIN = ["Hello", "it", "costs", "items.", "today", "then", "and", "four", "example"]
# Every text obeys the aligner's assumption: no plain word right after a rewritten word is one
# of its spoken words ("24 four" is left out; "24 items" is what answers look like).
ALL = PIECES + PLAIN


def obeys_assumption(text):
    spoken = set()  # spoken words of the run of rewritten words before the current word
    for w in source_words(text):
        if rewritable(w.text):
            spoken |= {word_key(s) for s in spoken_words(w.text, "en")} - REWRITE_WORDS
            continue
        if w.key in spoken:
            return False
        spoken = set()
    return True


texts = (
    st.lists(st.sampled_from(ALL), min_size=1, max_size=30).map(" ".join).filter(obeys_assumption)
)


def reports_for(text, style, drop_symbols):
    words = source_words(text)
    if style == "spoken":
        groups = [spoken_words(w.text, "en") for w in words]
    else:
        groups = [[w.text] for w in words]
    if drop_symbols:  # Gradium may not report what it does not speak
        groups = [[] if not w.key else g for w, g in zip(words, groups)]
    ends = []  # reports needed to hear each source word in full
    total = 0
    for g in groups:
        total += len(g)
        ends.append(total)
    return words, groups, [r for g in groups for r in g], ends


@settings(derandomize=True, max_examples=400, deadline=None)
@given(texts, st.sampled_from(["spoken", "source"]), st.booleans())
def test_property_a_cut_anywhere_loses_nothing_and_repeats_little(text, style, drop_symbols):
    """Cut after any number of reports: the continuation re-sends every word not heard in full,
    and at most one word heard in full (or a rewrite with the number words after it); each source
    word is shown once, in order."""
    words, groups, reports, ends = reports_for(text, style, drop_symbols)
    aligner, timed = align_timed(text, reports)
    # Shown once, in order, all by the end (a trailing symbol never reported aside: Pipecat
    # completes the context with it when the audio ends). Rewrites in a row show late.
    last = max((i for i, g in enumerate(groups) if g), default=-1)
    got = " ".join(t for words in timed for t, _, _ in words).split()
    # One entry per source word, at a time that never goes backwards and never comes after
    # the report that shows it.
    times = [(r, f) for words in timed for _, r, f in words]
    assert times == sorted(times)
    assert all(r <= i for i, words in enumerate(timed) for _, r, _ in words)
    expected = [w.text for w in words[: last + 1]]
    while expected and not word_key(expected[-1]):
        expected.pop()  # a symbol leads the next word: with none after it, it is not shown
    if not any(
        rewritable(a.text) and (rewritable(b.text) or b.key in REWRITE_WORDS)
        for a, b in zip(words, words[1:])
    ):
        assert got == expected
    else:
        assert set(got) <= set(expected) and len(got) <= len(expected)
    for h in range(len(reports) + 1):
        heard = aligner.heard(h)
        fully_heard = sum(1 for e in ends if e <= h)
        assert heard <= fully_heard, "a word not heard in full would be lost"
        repeated = [i for i in range(heard, fully_heard) if groups[i]]  # silent ones aside
        # More than one only for a rewrite and the number words after it ("24 and"): where
        # the rewrite ends is not known until a word that is none starts.
        assert len(repeated) <= 1 or all(
            rewritable(words[i].text) or words[i].key in REWRITE_WORDS for i in repeated
        )
        resend = aligner.unspoken_text(h)
        assert [w.text for w in source_words(resend)] == [w.text for w in words[heard:]]


@pytest.mark.parametrize("style", ["spoken", "source"])
@pytest.mark.parametrize(
    "text",
    [
        "It cost 24 dollars last year.",
        "Pi is 3.14 and that is it.",
        "Up 5 percent over the year.",
        "I love a\u20393 hearts so much.",  # a '<' as wire_text sends it
        "Say x\u2039y is fine here.",
    ],
)
def test_each_source_word_is_shown_alone_at_its_own_report(text, style):
    """With rewrite_rules, a word after a rewrite ("dollars" of "24 dollars", said "twenty four
    dollars") is only known as the text's once the next word comes: it is still shown alone,
    at the report Gradium said it at."""
    words = source_words(text)
    if style == "spoken":
        groups = [spoken_words(w.text, "en") for w in words]
    else:
        groups = [[w.text] for w in words]
    reports = [r for g in groups for r in g]
    own = [sum(len(g) for g in groups[:i]) for i in range(len(words))]  # first report of each
    _, timed = align_timed(text, reports)
    shown = [(t, r, f) for words_ in timed for t, r, f in words_]
    assert [t for t, _, _ in shown] == [w.text.replace("\u2039", "<") for w in words]
    assert [(r, f) for _, r, f in shown] == [(i, 0.0) for i in own]


def test_number_words_after_a_number_stay_with_its_rewrite():
    text = "It is $5 and 24 four times"
    reports = ["It", "is", "five", "dollars", "and", "twenty", "four", "four", "times"]
    aligner, shown = align_timed(text, reports)
    assert aligner.heard(5) == 2  # after "and": is it the price's or the text's? re-send both
    # Number words run on as one rewrite until a word that is none: shown late, never twice,
    # each at its own report: "and" at "and", "24" where its rewrite starts ("twenty"), "four"
    # at the last "four".
    assert shown[:3] == [[("It", 0, 0.0)], [("is", 1, 0.0)], [("$5", 2, 0.0)]]
    assert shown[8] == [("and", 4, 0.0), ("24", 5, 0.0), ("four", 7, 0.0), ("times", 8, 0.0)]
    assert aligner.heard() == 7


def test_the_assumption_broken_loses_the_word():
    """Documented limit: "e.g. example", said "for example example"; a cut after the first."""
    aligner, _ = align("e.g. example now", ["for", "example"])
    assert aligner.heard() == 2  # the text's "example" is taken as heard: it would be lost
