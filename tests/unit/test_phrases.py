"""Tests for pipecat_gradium.phrases.PhraseAggregator."""

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.transforms import strip_markdown

from pipecat_gradium.abbreviations import is_abbreviation
from pipecat_gradium.phrases import (
    GRADIUM_TAG,
    MAX_TAG_CHARS,
    ChunkMode,
    PhraseAggregator,
    clean_text,
    split_message,
    wire_text,
)

HARD = set("。！？｡、，；：､")
CLOSERS = set("\"'”’»)]}›」』）】〕〉》*_")


def run(tokens, **kwargs):
    """Feed tokens one by one; return (emitted chunks, flush text or None).

    The expected chunks below were written for a three-word first chunk and no ramp (the
    ramp has tests of its own).
    """
    kwargs.setdefault("first_chunk_words", 3)
    kwargs.setdefault("ramp_chunk_words", ())
    agg = PhraseAggregator(**kwargs)
    chunks = []
    for token in tokens:
        chunks += agg.feed(token)
    flushed = asyncio.run(agg.flush())
    return chunks, None if flushed is None else flushed.text


def chunks_of(tokens, **kwargs):
    """All chunks, the flush chunk included as the last one if any."""
    chunks, tail = run(tokens, **kwargs)
    return chunks + ([tail] if tail is not None else [])


# -- construction -------------------------------------------------------------


def test_defaults_and_types():
    agg = PhraseAggregator()
    assert agg.chunking is ChunkMode.PHRASE
    assert agg.aggregation_type == TextType.SENTENCE
    assert agg.is_first_chunk_pending
    assert agg.text == Aggregation(text="", type=TextType.SENTENCE)
    assert PhraseAggregator(chunking="sentence").chunking is ChunkMode.SENTENCE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"first_chunk_words": 0}, "first_chunk_words"),
        ({"ramp_chunk_words": (4, 0)}, "ramp_chunk_words"),
        ({"ramp_chunk_words": (2.5,)}, "ramp_chunk_words"),
        ({"max_chars": 9}, "max_chars"),
        ({"chunking": "paragraph"}, "chunking"),
        ({"loaded_first_chunk_words": -1}, "loaded_first_chunk_words"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhraseAggregator(**kwargs)


# -- realistic token streams --------------------------------------------------

FORECAST = [
    "The",
    " fore",
    "cast",
    " for",
    " tomorrow",
    " is",
    " sunny",
    ",",
    " with",
    " a",
    " high",
    " of",
    " 25",
    " degrees",
    ".",
    " Enjoy",
    " the",
    " sun",
    "!",
]


def test_subword_tokens_phrase_mode():
    chunks, tail = run(FORECAST)
    assert chunks == [
        "The forecast for ",
        "tomorrow is sunny, ",
        "with a high of 25 degrees. ",
    ]
    assert tail == "Enjoy the sun!"


def test_subword_tokens_never_split():
    agg = PhraseAggregator(chunking="word")
    assert agg.feed("The") == []
    assert agg.feed(" fore") == ["The "]
    # "fore" is not complete until the whitespace after it has ended.
    assert agg.feed("cast") == []
    assert agg.feed(" ") == []
    assert agg.feed(" for") == ["forecast  "]


async def test_aggregate_yields_unstripped_sentence_aggregations():
    agg = PhraseAggregator()
    results = []
    for token in ["Hi", " there", ".", " How", " are", " you", "?"]:
        async for aggregation in agg.aggregate(token):
            results.append(aggregation)
    assert results == [Aggregation(text="Hi there. ", type=TextType.SENTENCE)]
    assert agg.text == Aggregation(text="How are you?", type=TextType.SENTENCE)
    assert await agg.flush() == Aggregation(text="How are you?", type=TextType.SENTENCE)
    assert await agg.flush() is None


def test_no_missing_space_between_sentences():
    chunks = chunks_of(["Hi there.", " How", " are you?", " Fine", "."])
    assert "".join(chunks) == "Hi there. How are you? Fine."
    assert chunks == ["Hi there. ", "How are you? ", "Fine."]


# -- ramp -------------------------------------------------------------------------


def test_ramp_ends_the_chunks_after_the_first_at_4_then_8_words():
    text = (
        "I checked every restaurant within a ten minute walk of your hotel and found three "
        "that still have tables tonight."
    )
    # The default ramp: a clause-free sentence goes out in 2, 4 and 8 words, then the rest.
    agg = PhraseAggregator()
    chunks = [c for i in range(0, len(text), 3) for c in agg.feed(text[i : i + 3])]
    assert chunks == [
        "I checked ",
        "every restaurant within a ",
        "ten minute walk of your hotel and found ",
    ]
    assert [len(c.split()) for c in chunks] == [2, 4, 8]
    # Without the ramp the second chunk waits for max_chars (80).
    without = chunks_of([text], first_chunk_words=2)
    assert (
        without[1]
        == "every restaurant within a ten minute walk of your hotel and found three that "
    )


def test_ramp_chunk_still_ends_early_at_punctuation():
    chunks = chunks_of(
        ["Sure, the forecast looks bright today. Expect clear skies."],
        first_chunk_words=2,
        ramp_chunk_words=(4, 8),
    )
    assert chunks == ["Sure, ", "the forecast looks bright ", "today. ", "Expect clear skies."]


def test_ramp_counts_per_answer_and_not_in_sentence_mode():
    agg = PhraseAggregator(first_chunk_words=1, ramp_chunk_words=(2,))
    assert agg.feed("a b c d e f ") == [
        "a ",
        "b c ",
    ]
    asyncio.run(agg.flush())
    assert agg.feed("a b c d e f ") == ["a ", "b c "]  # a new answer ramps again
    agg = PhraseAggregator(chunking="sentence", first_chunk_words=1, ramp_chunk_words=(2,))
    assert agg.feed("a b c d e f ") == ["a "]


# -- first chunk ----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, first",
    [(1, "One "), (2, "One two "), (3, "One two three "), (4, "One two three four ")],
)
def test_first_chunk_after_n_words(n, first):
    chunks, _ = run(["One two three four five six seven"], first_chunk_words=n)
    assert chunks[0] == first


def test_first_chunk_at_clause_punctuation():
    chunks, tail = run(["Well", ",", " I", " think", " so", "."])
    assert chunks == ["Well, "]
    assert tail == "I think so."


def test_first_chunk_waits_for_word_completion():
    agg = PhraseAggregator()
    assert agg.feed("Well,") == []  # "Well," could still continue ("Well,-")
    assert agg.feed(" ") == []  # the whitespace run may continue
    assert agg.is_first_chunk_pending
    assert agg.feed("I") == ["Well, "]
    assert not agg.is_first_chunk_pending


def test_first_chunk_keeps_leading_whitespace():
    chunks, tail = run([" Hello", ",", " world"])
    assert chunks == [" Hello, "]
    assert tail == "world"


# -- later chunks by mode ---------------------------------------------------------


def test_phrase_mode_merges_tiny_clause_chunks():
    chunks = chunks_of(["Sure thing. So, we go, now. Yes. No"])
    assert chunks == ["Sure thing. ", "So, we go, ", "now. ", "Yes. ", "No"]


def test_closing_quotes_and_brackets_after_punctuation():
    chunks = chunks_of(['He said "yes." Then (twice), again'])
    assert chunks == ['He said "yes." ', "Then (twice), ", "again"]


def test_sentence_mode():
    chunks = chunks_of(FORECAST, chunking=ChunkMode.SENTENCE)
    assert chunks == [
        "The forecast for ",
        "tomorrow is sunny, with a high of 25 degrees. ",
        "Enjoy the sun!",
    ]


def test_sentence_mode_first_chunk_at_comma():
    chunks = chunks_of(["Well, I think, maybe, yes. Ok"], chunking="sentence")
    assert chunks == ["Well, ", "I think, maybe, yes. ", "Ok"]


def test_word_mode():
    chunks = chunks_of(["The", " fore", "cast", ",", "\n\n", "Is", " sunny"], chunking="word")
    assert chunks == ["The ", "forecast,\n\n", "Is ", "sunny"]


def test_max_chars_splits_before_the_overflowing_word():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    chunks = chunks_of([text], max_chars=20, first_chunk_words=2)
    assert chunks == [
        "alpha beta ",
        "gamma delta epsilon ",
        "zeta eta theta iota ",
        "kappa",
    ]
    assert all(len(c.rstrip()) <= 20 for c in chunks)


def test_max_chars_cuts_while_the_long_word_streams_in():
    agg = PhraseAggregator(max_chars=10)
    assert agg.feed("Hi, ") == []
    assert agg.feed("yo ") == ["Hi, "]
    assert agg.feed("abcdefg") == []  # "yo abcdefg" is 10 characters: fits
    assert agg.feed("h") == ["yo "]  # "yo abcdefgh" passes 10 before the word ends


def test_single_word_longer_than_max_chars_goes_alone():
    word = "x" * 30
    chunks = chunks_of([f"one {word} two three"], max_chars=10)
    assert chunks == ["one ", f"{word} ", "two three"]


# -- tags -----------------------------------------------------------------------


def test_flush_tag_split_across_tokens_stays_whole():
    tokens = ["Hello", ",", " <", "fl", "ush", ">", " world", " is", " big", "."]
    chunks = chunks_of(tokens)
    assert chunks == ["Hello, <flush> ", "world is big."]


def test_break_tag_attaches_to_previous_word():
    tokens = ["Hello ", "<br", 'eak time="1', '.5s" ', "/>", " world", " and", " more"]
    chunks = chunks_of(tokens, first_chunk_words=2)
    assert chunks == ['Hello <break time="1.5s" /> world ', "and more"]


def test_open_tag_holds_everything_after_its_start():
    agg = PhraseAggregator(chunking="word")
    assert agg.feed('Hi there <break time="1s"') == ["Hi "]
    assert agg.feed(" /") == []
    assert agg.text.text == 'there <break time="1s" /'
    assert agg.feed("> again") == ['there <break time="1s" /> ']
    assert agg.feed(" ok") == ["again "]


def test_tag_leading_a_word():
    chunks = chunks_of(["My code is <spell>A", "BC</spell>. Thanks, bye"])
    assert chunks == ["My code is ", "<spell>ABC</spell>. ", "Thanks, bye"]


def test_tag_at_start_of_answer_is_not_a_word():
    chunks = chunks_of(["<flush> One two three four"], first_chunk_words=2)
    assert chunks == ["<flush> One two ", "three four"]


def test_less_than_is_plain_text():
    chunks = chunks_of(["a ", "<", " b is true, and <", "3 means love, x<", "=y"])
    assert chunks == ["a < b ", "is true, ", "and <3 means love, ", "x<=y"]


def test_long_unclosed_tag_falls_back_to_plain_text():
    agg = PhraseAggregator(chunking="word", max_chars=400)
    head = "Hey, <" + "a" * 150
    # Below MAX_TAG_CHARS the '<...' may still be a tag: it holds everything back.
    assert agg.feed(head + " b" * 20) == []
    emitted = agg.feed(" b" * 30 + " c")
    # Past MAX_TAG_CHARS without '>': plain text, emitted word by word again.
    # The plain "<" word joins the chunk before it: no chunk starts with "<" mid-line.
    assert emitted[:2] == ["Hey, <" + "a" * 150 + " ", "b "]
    assert "".join(emitted) + agg.text.text == head + " b" * 50 + " c"
    assert agg.text.text == "c"


def test_tag_of_exactly_max_length_is_a_tag():
    tag = "<a" + " " * (MAX_TAG_CHARS - 3) + ">"
    assert len(tag) == MAX_TAG_CHARS
    chunks = chunks_of(["Hi, ", tag, " x y z"], chunking="word")
    assert chunks == ["Hi, " + tag + " ", "x ", "y ", "z"]
    longer = "<a" + " " * (MAX_TAG_CHARS - 2) + ">"
    chunks = chunks_of(["Hi, ", longer, " x y z"], chunking="word")
    # Plain text: "<a" stays with "Hi, "; the whitespace run then passes max_chars (80).
    # A lone ">" is not a word of its own: it goes with the next.
    assert chunks == ["Hi, <a" + " " * (MAX_TAG_CHARS - 2), "> x ", "y ", "z"]


def test_closing_tag_and_tag_inside_word():
    chunks = chunks_of(["<spell>St. Louis</spell> is nice. Ok<flush>, go on"])
    # Tags are atomic, but the text between an opening and a closing tag is not.
    assert chunks == ["<spell>St. ", "Louis</spell> is nice. ", "Ok<flush>, go on"]


# -- flush, interruption, reset ---------------------------------------------------


async def test_flush_returns_partial_word_and_resets_first_chunk():
    agg = PhraseAggregator()
    assert agg.feed("Hello, wor") == ["Hello, "]
    assert (await agg.flush()).text == "wor"
    assert agg.is_first_chunk_pending
    assert agg.feed("Yes, next") == ["Yes, "]


async def test_flush_returns_unclosed_tag():
    agg = PhraseAggregator()
    agg.feed("Hello <break time=")
    assert (await agg.flush()).text == "Hello <break time="
    assert await agg.flush() is None


@pytest.mark.parametrize("method", ["handle_interruption", "reset"])
async def test_interruption_and_reset_drop_pending(method):
    agg = PhraseAggregator()
    assert agg.feed("Hello, wor") == ["Hello, "]
    agg.feed(" <fla")
    await getattr(agg, method)()
    assert agg.text.text == ""
    assert agg.is_first_chunk_pending
    assert await agg.flush() is None
    assert agg.feed("Again, x") == ["Again, "]


def test_empty_and_whitespace_only():
    assert run([]) == ([], None)
    assert run(["", ""]) == ([], None)
    assert run(["  ", "\n", ""]) == ([], "  \n")


# -- take_ready_text ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fed, taken, left",
    [
        ("", "", ""),
        ("   ", "", "   "),
        ("fore", "", "fore"),
        ("The fore", "The ", "fore"),
        ("The forecast ", "The forecast ", ""),
        # A trailing word may still grow ("3." -> "3.14"): never taken, punctuation or not.
        ("Hello world,", "Hello ", "world,"),
        ("Pi is about 3.", "Pi is about ", "3."),
        ('He said "no."', "He said ", '"no."'),
        ("你好。", "", "你好。"),
        ("Hello <bre", "Hello ", "<bre"),
        ("Hello <", "Hello ", "<"),
        ("Hello.<fl", "", "Hello.<fl"),
        ("Hello <flush>", "Hello ", "<flush>"),
        ("Hello, <flush>", "Hello, ", "<flush>"),
        ("Hi there <flush> again", "Hi there <flush> ", "again"),
    ],
)
def test_take_ready_text(fed, taken, left):
    agg = PhraseAggregator(first_chunk_words=5)
    assert agg.feed(fed) == []
    assert agg.take_ready_text() == taken
    assert agg.text.text == left
    assert agg.is_first_chunk_pending == (taken == "")


def test_take_ready_text_then_continue():
    agg = PhraseAggregator(first_chunk_words=5)
    agg.feed("Hello <bre")
    assert agg.take_ready_text() == "Hello "
    assert agg.feed('ak time="1s" /> world') == []
    assert agg.take_ready_text() == '<break time="1s" /> '
    assert agg.feed(" and, more") == ["world and, "]
    assert agg.take_ready_text() == ""
    assert agg.text.text == "more"


def test_take_ready_text_can_split_a_whitespace_run():
    agg = PhraseAggregator(chunking="word")
    assert agg.feed("Hi there ") == ["Hi "]
    assert agg.take_ready_text() == "there "
    assert agg.feed(" you ok") == [" you "]  # documented: starts with whitespace


def test_take_ready_text_keeps_later_chunks_whole():
    agg = PhraseAggregator()
    assert agg.feed("Sure. Let me che") == ["Sure. "]
    assert agg.take_ready_text() == "Let me "
    assert agg.feed("ck that for you, ok") == ["check that for you, "]


# -- text shapes ------------------------------------------------------------------------


def test_newlines_kept():
    text = "Here is the list:\n\n- first item\n- second item.\n\nDone"
    chunks = chunks_of([text[i : i + 3] for i in range(0, len(text), 3)])
    # A later lone "list:" is too short to stand alone in PHRASE mode.
    assert chunks == ["Here is the ", "list:\n\n- first item\n- second item.\n\n", "Done"]


def test_emoji_and_accents():
    chunks = chunks_of(["Très ", "bien 👍🏽", " ! ", "Ça ", "va 🙂? ", "Oui"])
    assert chunks == ["Très bien 👍🏽 ", "! ", "Ça va 🙂? ", "Oui"]


def test_cjk_chunks_at_full_width_punctuation():
    chunks = chunks_of(["今天", "天气", "很好", "。", "明天", "下雨", "，", "好吗", "？", "我"])
    assert chunks == ["今天天气很好。", "明天下雨，好吗？", "我"]


def test_cjk_closing_brackets_stay_with_the_mark():
    chunks = chunks_of(["「はい。」そうです。「ええ、", "そう」"], chunking="word")
    assert chunks == ["「はい。」", "そうです。", "「ええ、", "そう」"]


def test_long_input_is_fast():
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 600) + "x" * 30000
    agg = PhraseAggregator(chunking="sentence")
    start = time.perf_counter()
    chunks = []
    for i in range(0, len(text), 4):
        chunks += agg.feed(text[i : i + 4])
    elapsed = time.perf_counter() - start
    assert "".join(chunks) + agg.text.text == text
    assert elapsed < 2.0


# -- properties ------------------------------------------------------------------------

PIECES = [
    "Hello",
    "fore",
    "cast",
    "a",
    "I",
    "25",
    "x",
    ",",
    ".",
    "!",
    "?",
    "…",
    ";",
    ":",
    '"',
    ")",
    "(",
    "*",
    " ",
    " ",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "<flush>",
    '<break time="1.5s" />',
    "<spell>",
    "</spell>",
    "<",
    ">",
    "/",
    "<3",
    "< ",
    "<a" + " b" * 60,
    "🙂",
    "👍🏽",
    "你好",
    "。",
    "，",
    "」",
    "é",
]

texts = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
options = st.fixed_dictionaries(
    {
        "chunking": st.sampled_from(list(ChunkMode)),
        "first_chunk_words": st.integers(1, 4),
        "max_chars": st.sampled_from([10, 17, 80]),
        "ramp_chunk_words": st.sampled_from([(), (4, 8), (1,), (2, 3)]),
    }
)


@st.composite
def split_texts(draw):
    text = draw(texts)
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]


def complete_tags(text):
    """Spans of the tags the aggregator must keep whole (reference scanner)."""
    spans = []
    i = 0
    while i < len(text) - 1:
        nxt = text[i + 1]
        if text[i] == "<" and ((nxt.isascii() and nxt.isalpha()) or nxt == "/"):
            j = text.find(">", i)
            if j != -1 and j + 1 - i <= MAX_TAG_CHARS:
                spans.append((i, j + 1))
                i = j + 1
                continue
        i += 1
    return spans


def check_chunks(text, chunks, tail):
    assert "".join(chunks) + (tail or "") == text
    assert all(chunks)
    assert tail is None or tail
    pos = 0
    spans = []
    for chunk in chunks:
        spans.append((pos, pos + len(chunk)))
        pos += len(chunk)
        # Chunks end where the next word starts: after whitespace or a CJK mark.
        assert pos < len(text)
        assert not text[pos].isspace()
        assert chunk[-1].isspace() or chunk.rstrip("".join(CLOSERS))[-1:] in HARD
    if tail:
        spans.append((pos, len(text)))
    for start, end in complete_tags(text):
        assert any(a <= start and end <= b for a, b in spans), (start, end)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(split_texts(), options)
def test_property_chunks_reassemble_and_respect_words_and_tags(split, kwargs):
    text, tokens = split
    chunks, tail = run(tokens, **kwargs)
    check_chunks(text, chunks, tail)
    # The result does not depend on how the text was split into tokens.
    assert run([text], **kwargs) == (chunks, tail)
    assert run(list(text), **kwargs) == (chunks, tail)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(split_texts(), options, st.lists(st.booleans(), min_size=21, max_size=21))
def test_property_take_ready_text_keeps_text_and_tags(split, kwargs, takes):
    text, tokens = split
    agg = PhraseAggregator(**kwargs)
    pieces = []
    for token, take in zip(tokens, takes):
        pieces += agg.feed(token)
        if take:
            taken = agg.take_ready_text()
            if taken:
                pieces.append(taken)
    flushed = asyncio.run(agg.flush())
    if flushed is not None:
        pieces.append(flushed.text)
    assert "".join(pieces) == text
    assert all(pieces)
    pos = 0
    spans = []
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    for start, end in complete_tags(text):
        assert any(a <= start and end <= b for a, b in spans), (start, end)


words_text = st.lists(
    st.tuples(st.text("abcdefghij", min_size=1, max_size=14), st.sampled_from([" ", "\n", "  "])),
    max_size=40,
).map(lambda pairs: "".join(w + s for w, s in pairs))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(words_text, options)
def test_property_max_chars_and_word_mode(text, kwargs):
    chunks, tail = run([text], **kwargs)
    for chunk in chunks:
        if len(chunk.split()) > 1:
            assert len(chunk.rstrip()) <= kwargs["max_chars"]
        if kwargs["chunking"] is ChunkMode.WORD:
            assert len(chunk.split()) == 1
    if kwargs["chunking"] is ChunkMode.WORD:
        # Only the last word (its whitespace run may continue) is still pending.
        assert tail is None or len(tail.split()) == 1


# -- the first chunk (it carries the flush) never ends right after an abbreviation ------


@pytest.mark.parametrize(
    ("language", "text", "first"),
    [
        ("en", "Dr. Smith will see you now.", "Dr. Smith "),
        ("en", "Mr. Jones is here.", "Mr. Jones "),
        ("en", "St. Louis is lovely.", "St. Louis "),
        ("en", "E.g. apples are red.", "E.g. apples "),
        ("en", '"Dr. Who" is on.', '"Dr. Who" '),
        ("en", "Call J. K. Rowling today.", "Call J. K. Rowling "),
        ("en", "1. Open the app.", "1. Open "),
        ("de", "Am 3. Oktober ist es kalt.", "Am 3. Oktober "),
        ("de", "Z.B. Äpfel sind rot.", "Z.B. Äpfel "),
        ("de", "Hr. Meier ist da.", "Hr. Meier "),
        ("fr", "M. Dupont arrive bientôt.", "M. Dupont "),
        ("fr", "Mme. Dupont arrive.", "Mme. Dupont "),
        ("es", "Sr. García llega hoy.", "Sr. García "),
        ("es", "Dra. López llega hoy.", "Dra. López "),
        ("pt", "Sra. Silva chegou agora.", "Sra. Silva "),
        ("pt", "Av. Paulista fica longe.", "Av. Paulista "),
        # Sentence ends still end the first chunk at once; two words still make one.
        ("en", "Yes. I can help.", "Yes. "),
        ("en", "OK. Let me check.", "OK. "),
        ("en", "Sure, here it is.", "Sure, "),
        ("en", "It cost 24 dollars.", "It cost "),
        ("de", "Ja. Ich komme.", "Ja. "),
        ("fr", "Oui. Je viens.", "Oui. "),
        ("es", "Sí. Ya voy.", "Sí. "),
        ("pt", "Sim. Já vou.", "Sim. "),
    ],
)
@pytest.mark.parametrize("chunking", list(ChunkMode))
def test_first_chunk_never_ends_after_an_abbreviation(language, text, first, chunking):
    for tokens in ([text], list(text), [text[i : i + 3] for i in range(0, len(text), 3)]):
        chunks = chunks_of(tokens, language=language, chunking=chunking, first_chunk_words=2)
        if chunking is ChunkMode.WORD and not is_abbreviation(first.split()[0], language=language):
            assert chunks[0] == first.split(" ")[0] + " "  # one word, as before
        else:
            assert chunks[0] == first
        assert "".join(chunks) == text


def test_language_follows_the_setting():
    # "Dra." is a title in Spanish, a sentence's last word in English (sentencex's rules).
    agg = PhraseAggregator(language="en")
    assert agg.feed("Dra. López llega") == ["Dra. "]
    agg.set_language("es")  # what Pipecat's TTSService does when the language setting changes
    asyncio.run(agg.reset())
    assert agg.feed("Dra. López llega") == ["Dra. López "]


def test_quiet_flush_of_the_first_chunk_keeps_an_abbreviation_pending():
    agg = PhraseAggregator()
    assert agg.feed("Dr. ") == []
    assert agg.take_ready_text() == ""  # no first flush right after "Dr."
    assert agg.feed("Sm") == []
    assert agg.take_ready_text() == ""
    assert agg.feed("ith will") == ["Dr. Smith "]
    agg = PhraseAggregator(first_chunk_words=5)
    assert agg.feed("We saw Dr. Sm") == []
    assert agg.take_ready_text() == "We saw "
    assert agg.text.text == "Dr. Sm"
    # "Dr." is the chunk's first word: the ramp's 4 words count it.
    assert agg.feed("ith will see you, ok") == ["Dr. Smith will see "]
    agg = PhraseAggregator(first_chunk_words=5)
    assert agg.feed("We saw Dr. <bre") == []
    assert agg.take_ready_text() == "We saw "
    # Later chunks carry no flush: a sentence mark may end them, as before.
    assert agg.feed('ak time="1s" /> Smith and') == ['Dr. <break time="1s" /> ']
    assert agg.text.text == "Smith and"


ABBREVIATED_WORDS = ["Dr.", "Mr.", "e.g.", "J.", "3.", "z.B.", "Mme.", "Sra.", "St."]
PLAIN_WORDS = ["Smith", "will", "see", "you", "Yes.", "now,", "ok.", "Am", "Oktober", "24"]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(ABBREVIATED_WORDS + PLAIN_WORDS), min_size=1, max_size=12),
    st.sampled_from(["en", "de", "fr", "es", "pt"]),
    options,
    st.sets(st.integers(0, 200), max_size=10),
)
def test_property_first_chunk_ends_after_no_abbreviation_and_waits_one_word_per_one(
    words, language, kwargs, cuts
):
    text = " ".join(words) + " end"
    bounds = [0, *sorted(c for c in cuts if c < len(text)), len(text)]
    tokens = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    chunks, tail = run(tokens, language=language, **kwargs)
    check_chunks(text, chunks, tail)
    assert run([text], language=language, **kwargs) == (chunks, tail)
    if not chunks or len(chunks[0]) > kwargs["max_chars"] - 12:
        return  # a max_chars cut may end it anywhere
    first = chunks[0].split()
    assert not is_abbreviation(
        first[-1], before=chunks[0][: -len(first[-1]) - 1], language=language
    )
    # Latency: one word more than the rule's for each abbreviation it held back.
    held = sum(is_abbreviation(w, language=language) for w in first[:-1])
    limit = 1 if kwargs["chunking"] is ChunkMode.WORD else kwargs["first_chunk_words"]
    assert len(first) <= limit + held


# -- words that may still grow (quiet flush) ---------------------------------------------


def test_quiet_flush_never_splits_a_number():
    # The LLM pauses right after " 3." and the next token is "14".
    agg = PhraseAggregator()
    out = agg.feed("Pi is")
    out += agg.feed(" about")
    out += agg.feed(" 3.")
    out.append(agg.take_ready_text())
    out += agg.feed("14 and e.g. ")
    out.append(agg.take_ready_text())
    out = [o for o in out if o]
    assert out == ["Pi is ", "about ", "3.14 and e.g. "]


# -- markdown spans ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, chunks",
    [
        (
            ["Read [the", " guide, part", " one](https://example.com/guide)", " first."],
            ["Read [the guide, part one](https://example.com/guide) ", "first."],
        ),
        (
            ["This is **bold", " text", "** here, and *it is* fine. Ok"],
            ["This is ", "**bold text** here, ", "and *it is* fine. ", "Ok"],
        ),
        (["Say __very loud__ words, ok"], ["Say __very loud__ ", "words, ok"]),
        (["Run `pip install", " x` now, please"], ["Run `pip install x` ", "now, please"]),
        # Not spans: a bullet, spaced or intraword markers, snake_case, "[1]".
        (["* one, two three, four"], ["* one, ", "two three, ", "four"]),
        (
            ["2 * 3 = 6, a snake_case_name, [1] ok"],
            ["2 * 3 ", "= 6, ", "a snake_case_name, ", "[1] ok"],
        ),
        # A link whose URL holds parentheses.
        (
            ["See [Foo](https://en.wikipedia.org/wiki/Foo_(bar)) now, ok"],
            ["See [Foo](https://en.wikipedia.org/wiki/Foo_(bar)) ", "now, ok"],
        ),
    ],
)
def test_markdown_spans_stay_whole(tokens, chunks):
    assert chunks_of(tokens, first_chunk_words=2) == chunks
    assert chunks_of(list("".join(tokens)), first_chunk_words=2) == chunks


def test_quiet_flush_keeps_an_open_span():
    agg = PhraseAggregator(first_chunk_words=5)
    agg.feed("Read [the guide, ")
    assert agg.take_ready_text() == "Read "
    assert agg.feed("part one](x) first. Then") == ["[the guide, part one](x) first. "]


def test_unclosed_span_is_released_as_text():
    agg = PhraseAggregator(chunking="word", max_chars=400)
    head = "Hey **" + "word " * 40
    assert agg.feed(head) == ["Hey "]  # held: "**" may still close
    out = agg.feed("word " * 40)  # past MAX_SPAN_CHARS: the "**" is plain text
    assert out[0] == "**word "
    assert "".join(["Hey ", *out]) + agg.text.text == head + "word " * 40
    assert all(len(c.split()) == 1 for c in out)


# -- wire text: control characters, stray '<', long messages ----------------------------


def test_wire_text_escapes_stray_less_than_but_not_gradium_tags():
    text = 'If a < b and c > d then a<3 hearts, <spell>x</spell> <flush> <break time="1s" />'
    assert wire_text(text) == (
        "If a \u2039 b and c > d then a\u20393 hearts, \u2039spell>x\u2039/spell> "
        '<flush> <break time="1s" />'
    )


def test_clean_text_replaces_control_characters_one_for_one():
    text = "a\x00b\x1b[31mred\r\nline\ttab\x7f."
    cleaned = clean_text(text)
    assert cleaned == "a b [31mred \nline\ttab ."
    assert len(cleaned) == len(text)
    assert wire_text(text) == cleaned


def test_split_message():
    assert split_message("short one ", 80) == ["short one "]
    assert split_message("alpha beta gamma delta ", 12) == ["alpha beta ", "gamma delta "]
    assert split_message("x" * 25 + " y", 10) == ["x" * 10, "x" * 10, "xxxxx y"]
    # Never inside a tag: the cut moves before it.
    assert split_message("abcdefgh<flush>ijklmnop", 10) == ["abcdefgh", "<flush>ijk", "lmnop"]


safe_pieces = [
    "Hello",
    "fore",
    "cast",
    "3.",
    "14",
    "$1,299.99",
    ",",
    ".",
    " ",
    " ",
    "\n",
    "<flush>",
    '<break time="1.5s" />',
    "[the guide, part one](https://example.com/a_(b))",
    "**bold text**",
    "*it is*",
    "__under line__",
    "`code x`",
    "a < b",
    "<3",
    "é",
]
SPAN_PIECES = [p for p in safe_pieces if p[0] in "[*_`"]
safe_texts = st.lists(st.sampled_from(safe_pieces), max_size=40).map(
    lambda ps: " ".join(ps)  # spans are separated from their neighbours by a space
)


def span_ranges(text):
    spans = []
    for piece in SPAN_PIECES:
        start = text.find(piece)
        while start != -1:
            spans.append((start, start + len(piece)))
            start = text.find(piece, start + len(piece))
    return spans


@settings(derandomize=True, max_examples=200, deadline=None)
@given(safe_texts, options, st.lists(st.integers(0, 400), max_size=12), st.data())
def test_property_no_cut_inside_a_word_tag_or_span(text, kwargs, cuts, data):
    """Any split of the text into tokens, quiet flushes anywhere: every boundary between
    messages follows whitespace (or a full-width mark) and lies outside tags and spans."""
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    tokens = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    agg = PhraseAggregator(**kwargs)
    pieces = []
    for token in tokens:
        pieces += agg.feed(token)
        if data.draw(st.booleans()):
            pieces.append(agg.take_ready_text())
    pieces = [p for p in pieces if p]
    flushed = asyncio.run(agg.flush())
    assert "".join(pieces) + (flushed.text if flushed else "") == text
    pos = 0
    for piece in pieces:
        pos += len(piece)
        assert piece[-1].isspace(), (piece, pieces)
        for start, end in [*span_ranges(text), *complete_tags(text)]:
            assert not start < pos < end, (text[start:end], pieces)
    # The wire: every message fits max_chars unless it is one word or tag.
    for piece in pieces:
        wire = wire_text(piece)
        assert len(wire) == len(piece)
        for msg in split_message(wire, kwargs["max_chars"]):
            assert len(msg) <= kwargs["max_chars"] or not msg.strip().count(" ")
        assert "".join(split_message(wire, kwargs["max_chars"])) == wire


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from([10, 17, 80]))
def test_property_split_message(text, max_chars):
    wire = wire_text(text)
    assert "<" not in GRADIUM_TAG.sub("", wire)
    msgs = split_message(wire, max_chars)
    assert "".join(msgs) == wire
    assert all(len(m) <= max_chars for m in msgs if not GRADIUM_TAG.search(m))


@pytest.mark.parametrize(
    "text, chunks",
    [
        # Mid-line, a marker word joins the chunk before it and is not a word of its own:
        # "5 - 3" keeps its minus.
        ("Take 5 - 3 and then 7 + 1 more", ["Take 5 - 3 ", "and then ", "7 + 1 ", "more"]),
        ("Yes a > b and c", ["Yes a > b ", "and c"]),
        ("So # one is fine", ["So # one ", "is fine"]),
        # After a newline the marker is markdown; it never ends a chunk, so strip_markdown
        # sees it with its item.
        ("Here it is:\n- one thing\n> quoted", ["Here it ", "is:\n- one ", "thing\n> quoted"]),
    ],
)
def test_no_chunk_starts_with_a_markdown_marker_mid_line(text, chunks):
    assert chunks_of([text], first_chunk_words=2, ramp_chunk_words=(2, 2, 2, 2)) == chunks
    words = chunks_of([text], chunking="word")
    for before, chunk in zip(words, words[1:]):
        assert chunk[0] not in "-+*#><" or "\n" in before


MARKDOWN_ANSWERS = [
    "Sure thing. Top three picks\n- Luigi's on Main Street\n- Chez Paul\n- The Blue Door",
    "## Plan\n1. Pack early\n> Quote of the day: take it easy\n+ one more item here",
    "So 5 - 3 is 2, and a > b while c < d; also 7 + 1 makes 8 and # one is fine",
    "Here are **three** options: *fast*, `cheap` and [good](https://x.y/z) ones",
]


@pytest.mark.parametrize("text", MARKDOWN_ANSWERS)
@pytest.mark.parametrize("size", [1, 3, 7])
def test_strip_markdown_per_chunk_reads_like_the_whole_answer(text, size):
    # Pipecat runs its transforms on each chunk alone: the words must come out as they would
    # from the whole answer, whatever the token size.
    tokens = [text[i : i + size] for i in range(0, len(text), size)]
    chunks = chunks_of(tokens, ramp_chunk_words=(4, 8))
    per_chunk = [asyncio.run(strip_markdown(c, "sentence")) for c in chunks]
    assert " ".join(per_chunk).split() == asyncio.run(strip_markdown(text, "sentence")).split()


def test_quiet_flush_never_leaves_a_marker_at_the_next_chunk_start():
    agg = PhraseAggregator(first_chunk_words=5)
    agg.feed("Take the number 5 -")
    assert agg.take_ready_text() == ""  # "- 3" would read as a bullet in a chunk of its own
    assert agg.feed(" 3 and then some more") == ["Take the number 5 - 3 "]
    agg = PhraseAggregator(first_chunk_words=5)
    agg.feed("Here are some items\n-")
    assert agg.take_ready_text() == "Here are some items\n"  # after a newline: markdown


# -- the first chunk under load ------------------------------------------------

WALK = "I checked every restaurant within a ten minute walk of your hotel. And "


def loaded_chunks(text, loaded, **kwargs):
    asked = []

    def is_loaded():
        asked.append(len(asked))
        return loaded

    kwargs.setdefault("ramp_chunk_words", ())
    agg = PhraseAggregator(
        first_chunk_words=2, loaded_first_chunk_words=5, loaded=is_loaded, **kwargs
    )
    return [c for token in text.split(" ") for c in agg.feed(token + " ")], asked


@pytest.mark.parametrize("loaded", [False, True])
def test_first_chunk_waits_for_more_words_only_while_loaded(loaded):
    chunks, asked = loaded_chunks(WALK, loaded)
    first = "I checked every restaurant within " if loaded else "I checked "
    assert chunks[0] == first
    # Nothing lost or reordered ("And" is complete only once a next word starts).
    assert "".join(chunks) == WALK[: WALK.index("And")]
    assert asked  # asked at the first chunk's words
    assert len(asked) <= 5  # and not for the later chunks


def test_under_load_a_clause_mark_does_not_end_the_first_chunk_but_a_sentence_does():
    chunks, _ = loaded_chunks("Well, I think so. Yes it is. ", True)
    assert chunks[0] == "Well, I think so. "
    chunks, _ = loaded_chunks("Well, I think so. Yes it is. ", False)
    assert chunks[0] == "Well, "


def test_load_check_off_when_it_would_not_raise_the_first_chunk():
    asked = []
    agg = PhraseAggregator(
        first_chunk_words=3, loaded_first_chunk_words=3, loaded=lambda: asked.append(1) or True
    )
    assert agg.feed("one two three four ") == ["one two three "]
    assert asked == []
