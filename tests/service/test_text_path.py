"""The text path end to end: what goes on the wire and what the assistant context holds.

Real parts only: the service in a Pipecat pipeline, Pipecat's own assistant context aggregator
downstream, Pipecat's markdown transform and filter where a bot would use them, the emulator
on 127.0.0.1 speaking and reporting words (with ``rewrite_rules`` where the answer has
numbers).
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.utils.text.markdown_text_filter import MarkdownTextFilter
from pipecat.utils.text.transforms import strip_markdown

from pipecat_gradium import GradiumStreamingTTSService
from pipecat_gradium.abbreviations import is_abbreviation
from pipecat_gradium.alignment import source_words
from pipecat_gradium.emulator import Fault, GradiumEmulator, RequestStats
from pipecat_gradium.emulator.normalize import spoken_words
from pipecat_gradium.phrases import GRADIUM_TAG
from pipecat_gradium.testing import PipelineHarness, start_pipeline
from tests.conftest import FAST

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def run(tts: GradiumStreamingTTSService) -> AsyncIterator[tuple[PipelineHarness, LLMContext]]:
    """The service with Pipecat's assistant aggregator downstream; stopped on the way out."""
    context = LLMContext()
    h = await start_pipeline(tts, downstream=[LLMAssistantAggregator(context)])
    try:
        yield h, context
    finally:
        await h.stop()


def assistant_text(context: LLMContext) -> str:
    return " ".join(
        str(m.get("content", "")) for m in context.get_messages() if m.get("role") == "assistant"
    )


def wire(emu: GradiumEmulator) -> list[str]:
    """Every text message the emulator received, in order."""
    return [t for r in emu.stats.requests for t in r.texts]


def spoken(emu: GradiumEmulator) -> list[str]:
    """Every word the emulator reported speaking."""
    return [w for r in emu.stats.requests for w, _, _ in r.words]


async def answer(h: PipelineHarness, emu: GradiumEmulator, tokens: list[str], **kw) -> None:
    """Speak one answer and wait until its audio and words are through and the context set."""
    n = len(emu.stats.requests) - (0 if kw.get("start", True) else 1)
    await h.speak_answer("", tokens=tokens, **kw)
    await emu.stats.wait_for(lambda s: len(s.requests) > n and s.requests[-1].finished)
    await h.down.wait_for(lambda: bool(h.down.frames(TTSTextFrame)))


async def test_quiet_flush_never_cuts_a_word(emu: GradiumEmulator, make_tts):
    """The LLM pauses after " 3." (next token "14") longer than quiet_flush_s."""
    async with run(make_tts(quiet_flush_s=0.1)) as (h, context):
        await h.speak_answer("", tokens=["Pi", " is", " about", " 3."], end=False)
        # The quiet flush sends the complete words and a <flush>; "3." stays: it may still grow.
        await emu.stats.wait_for(lambda s: sum(t == "<flush>" for t in wire(emu)) == 1)
        await asyncio.sleep(0.3)  # the LLM is still quiet: nothing more may go out meanwhile
        # The first phrase with its flush; then "about " and a flush: "3." is held.
        assert wire(emu) == ["Pi is <flush>", "about ", "<flush>"]
        await answer(h, emu, ["14", " and", " e.g.", " more."], start=False)
    assert not any(m.rstrip(" <flush>").endswith("3.") for m in wire(emu))
    assert "3.14" in spoken(emu)
    assert assistant_text(context) == "Pi is about 3.14 and e.g. more."


LINK = ["Read", " [the", " guide", ",", " part", " one", "](https://", "example.com/guide)"]
MARKDOWN = [*LINK, " first", ".", " It", " is", " **very", " clear", "**", " for", " all", "."]
MARKDOWN_TEXT = "".join(MARKDOWN)


@pytest.mark.parametrize(
    "option",
    [
        {},  # the default: strip_markdown=True
        {"strip_markdown": False, "text_transforms": [("*", strip_markdown)]},
        {"strip_markdown": False, "text_filters": [MarkdownTextFilter()]},
    ],
    ids=["default", "strip_markdown", "MarkdownTextFilter"],
)
async def test_markdown_reaches_filters_whole(emu: GradiumEmulator, make_tts, option):
    async with run(make_tts(**option)) as (h, context):
        await answer(h, emu, MARKDOWN)
    sent = "".join(wire(emu)).replace("<flush>", "")
    # Whole spans reached the filter: no URL, no markers on the wire or in the audio.
    assert "https" not in sent and "example" not in sent and "*" not in sent
    assert "Read the guide, part one first." in " ".join(sent.split())
    assert " ".join(spoken(emu)) == "Read the guide, part one first. It is very clear for all."
    # The context keeps the LLM's own text, as Pipecat's transforms intend.
    assert assistant_text(context) == MARKDOWN_TEXT


async def test_stray_less_than_is_never_sent_and_the_context_keeps_it(
    emu: GradiumEmulator, make_tts
):
    text = "If a < b and c > d then a<3 hearts, ok."
    async with run(make_tts()) as (h, context):
        await answer(h, emu, [text[i : i + 4] for i in range(0, len(text), 4)])
    sent = "".join(wire(emu))
    assert "<" not in GRADIUM_TAG.sub("", sent)
    # Every word is spoken (none swallowed as a tag); the context shows the LLM's text.
    assert [w.replace("\u2039", "<") for w in spoken(emu)] == text.split()
    assert assistant_text(context) == text


async def test_markers_mid_line_keep_their_meaning_across_messages(emu: GradiumEmulator, make_tts):
    # Each message goes through strip_markdown alone: a message starting "- 3" or "> b" would
    # lose the minus or the ">" as a list bullet or a quote. None may start that way mid-line.
    text = "Well then, take 5 - 3 and then add 7 + 1 more, so a > b holds in every case we try."
    async with run(make_tts(ramp_chunk_words=(1, 1, 1, 1, 1, 1))) as (h, context):
        await answer(h, emu, [text[i : i + 3] for i in range(0, len(text), 3)])
    assert not any(m.lstrip()[:1] in "-+>" for m in wire(emu)[1:])
    assert spoken(emu) == text.split()
    assert assistant_text(context) == text


async def test_control_characters_and_a_huge_word(emu: GradiumEmulator, make_tts):
    huge = "x" * 300
    text = f"Bell\x07 and\x1b[0m escape\r\nline {huge} end."
    async with run(make_tts(max_chunk_chars=40)) as (h, context):
        await answer(h, emu, [text])
    messages = wire(emu)
    assert all(len(m) <= 40 for m in messages), [len(m) for m in messages]
    sent = "".join(messages).replace("<flush>", "")
    assert not any(ord(c) < 32 and c not in "\t\n" for c in sent)
    assert sent.split() == ["Bell", "and", "[0m", "escape", "line", huge, "end."]


async def test_markdown_is_sent_as_written_when_stripping_is_off(emu: GradiumEmulator, make_tts):
    async with run(make_tts(strip_markdown=False)) as (h, context):
        await answer(h, emu, MARKDOWN)
    # Spans are still whole on the wire (one message holds the whole link).
    assert any("[the guide, part one](https://example.com/guide)" in m for m in wire(emu))
    assert assistant_text(context) == MARKDOWN_TEXT


# -- continuation under both report styles, with numbers, times and prices ---------------

PRICED = (
    "Your order of 24 items costs $1,299.99 and ships at 8:15 tomorrow, on the 21st, "
    "with a 15% discount from Dr. Smith, so please check the 3 boxes when they arrive."
)


def source_of(text: str) -> list[str]:
    return [w.text for w in source_words(text)]


def fully_heard(stats: RequestStats, style: str) -> int:
    """Source words of a request whose spoken words were all heard."""
    heard = len(stats.heard_words)
    count = 0
    for word in source_of(stats.text):
        need = 1 if style == "source" else len(spoken_words(word, "en"))
        if need > heard:
            break
        heard -= need
        count += 1
    return count


@pytest.mark.parametrize("style", ["spoken", "source"])
@pytest.mark.parametrize("fault", [Fault.RESET_MID_WORD, Fault.REQUEST_ERROR])
@pytest.mark.parametrize("after", [25, 40], ids=["cut-early", "cut-later"])
async def test_continuation_with_numbers_loses_nothing_under_both_report_styles(
    style, fault, after
):
    """A cut mid-answer: the continuation starts at the first source word not heard, whatever
    the word reports carry; the context holds the LLM's own "24", "$1,299.99", "8:15".

    With spoken reports, 40 chunks cut inside "one thousand two hundred and ninety nine
    dollars...": the price is re-sent, and shown once."""
    async with GradiumEmulator(
        api_key="test-key", latency=FAST, fault_after_chunks=after, word_reports=style
    ) as emu:
        emu.fault_next_request(fault)
        settings = GradiumStreamingTTSService.Settings(language="en")  # rewrite_rules "en"
        tts = GradiumStreamingTTSService(
            api_key="test-key", url=emu.ws_url, settings=settings, stop_frame_timeout_s=0.5
        )
        async with run(tts) as (h, context):
            await h.speak_answer(PRICED, tokens_per_s=200)
            await h.down.wait_for(lambda: bool(h.down.frames(TTSStoppedFrame)), timeout=20)
        reqs = emu.stats.requests
        assert len(reqs) == 2 and reqs[1].client_req_id == f"{reqs[0].client_req_id}#2"
        assert reqs[0].setup["json_config"]["rewrite_rules"] == "en"
        words = source_of(PRICED)
        heard = fully_heard(reqs[0], style)
        resent = source_of(reqs[1].text)
        start = len(words) - len(resent)
        assert resent == words[start:]
        assert start <= heard, f"lost: {words[start:heard]}"
        assert heard - start <= 1, f"said twice: {words[start:heard]}"
        assert fully_heard(reqs[1], style) == len(resent)
        assert assistant_text(context) == PRICED
        shown = " ".join(f.text for f in h.down.frames(TTSTextFrame))
        assert "twenty" not in shown and "dollars" not in shown


# -- the first flush never right after an abbreviation, in every language -----------------

ABBREVIATED = [
    ("en", "Dr. Smith will see you now, so please wait.", "Dr. Smith "),
    ("en", "Mr. Jones is here today.", "Mr. Jones "),
    ("en", "St. Louis is lovely in May.", "St. Louis "),
    ("en", "E.g. apples are red.", "E.g. apples "),
    ("en", "Call J. Smith today.", "Call J. Smith "),
    ("de", "Am 3. Oktober ist es kalt.", "Am 3. Oktober "),
    ("de", "Dr. Müller kommt gleich.", "Dr. Müller "),
    ("fr", "M. Dupont arrive bientôt.", "M. Dupont "),
    ("fr", "Mme. Dupont arrive bientôt.", "Mme. Dupont "),
    ("es", "Sr. García llega hoy.", "Sr. García "),
    ("pt", "Sra. Silva chegou agora.", "Sra. Silva "),
    # Ordinary text keeps its first-audio latency: two words, or a sentence end alone.
    ("en", "Yes. I can help.", "Yes. "),
    ("en", "It cost 24 dollars last year.", "It cost "),
    ("de", "Er kam um drei. Dann ging er.", "Er kam "),
]


@pytest.mark.parametrize(("language", "text", "first"), ABBREVIATED)
async def test_first_flush_never_follows_an_abbreviation(
    emu: GradiumEmulator, language, text, first
):
    settings = GradiumStreamingTTSService.Settings(language=language)
    tts = GradiumStreamingTTSService(
        api_key="test-key", url=emu.ws_url, settings=settings, stop_frame_timeout_s=0.5
    )
    async with run(tts) as (h, context):
        await answer(h, emu, [text[i : i + 3] for i in range(0, len(text), 3)])
    (request,) = emu.stats.requests
    # One flush, at the end of the first message: after the word that follows the
    # abbreviation, initial or ordinal.
    assert request.texts[0] == first + "<flush>", request.texts
    assert request.text.count("<flush>") == 1
    before_flush = request.text.split("<flush>")[0].split()
    assert not is_abbreviation(before_flush[-1], language=language)
    assert "".join(request.texts).replace("<flush>", "") == text
    assert assistant_text(context) == text


# -- one TTSTextFrame per source word, at its own time -------------------------------------

REWRITTEN = [
    "It cost 24 dollars last year.",
    "Pi is 3.14 and that is it.",
    "Up 5 percent over the year.",
    "I love a<3 hearts so much.",
    "Say x<y is fine here.",
]


def own_report_starts(request: RequestStats, style: str) -> list[float]:
    """Each source word's first report's start (what Gradium says is its own time)."""
    starts = [start for _, start, _ in request.words]
    out, i = [], 0
    for w in source_of(request.text):
        out.append(starts[i])
        i += 1 if style == "source" else len(spoken_words(w, "en"))
    return out


@pytest.mark.parametrize("style", ["spoken", "source"])
@pytest.mark.parametrize("text", REWRITTEN)
async def test_one_text_frame_per_source_word_at_its_own_time(style, text):
    async with GradiumEmulator(api_key="test-key", latency=FAST, word_reports=style) as emu:
        settings = GradiumStreamingTTSService.Settings(language="en")  # rewrite_rules "en"
        tts = GradiumStreamingTTSService(
            api_key="test-key", url=emu.ws_url, settings=settings, stop_frame_timeout_s=0.5
        )
        async with run(tts) as (h, context):
            await answer(h, emu, [text[i : i + 3] for i in range(0, len(text), 3)])
            await h.down.wait_for(lambda: bool(h.down.frames(TTSStoppedFrame)))
        (request,) = emu.stats.requests
    frames = h.down.frames(TTSTextFrame)
    assert [f.text for f in frames] == text.split()
    # Times from the first word: never backwards, and each word's own (its first report's
    # start in the emulator's audio), so no word shows before Gradium says it.
    times = [(f.pts - frames[0].pts) / 1e9 for f in frames]
    assert times == sorted(times)
    own = own_report_starts(request, style)
    assert len(own) == len(frames)
    assert [round(t - o, 3) for t, o in zip(times, [x - own[0] for x in own])] == [0.0] * len(own)
    assert assistant_text(context) == text


async def test_a_token_in_flight_at_a_barge_in_never_reaches_the_context(
    emu: GradiumEmulator, make_tts
):
    # The barge-in overtakes " we rest" and the cancelled LLM's end frame follows it: the
    # context holds the heard start of the interrupted answer and then the next answer, each
    # word once, and nothing of the token in flight.
    first = "Let me walk you through the whole plan before we pack the car tomorrow morning early."
    nxt = "I booked a table for two at seven thirty."
    async with run(make_tts()) as (h, context):
        await h.speak_answer(first, end=False)
        await h.down.wait_for(lambda: len(h.down.frames(TTSTextFrame)) >= 2, timeout=10)
        await h.send(InterruptionFrame())
        await h.down.wait_for(lambda: bool(h.down.frames(InterruptionFrame)), timeout=5)
        await h.send(LLMTextFrame(" Then"), LLMTextFrame(" we rest"), LLMFullResponseEndFrame())
        await h.speak_answer(nxt)
        await h.down.wait_for(lambda: h.stopped() >= 1, timeout=15)
        await h.down.wait_for(lambda: nxt in assistant_text(context), timeout=5)
    messages = [
        str(m.get("content", "")) for m in context.get_messages() if m.get("role") == "assistant"
    ]
    heard, last = messages[0].split(), messages[-1]
    assert len(messages) == 2
    assert heard and heard == first.split()[: len(heard)]  # the heard start, each word once
    assert last == nxt
    assert "rest" not in assistant_text(context) and "Then" not in assistant_text(context)
