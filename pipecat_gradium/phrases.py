"""Phrase chunking of streamed LLM text for Gradium's TTS WebSocket.

Gradium concatenates ``text`` messages exactly as sent, so the client must supply
the whitespace between chunks, and a tag split across two messages is read aloud.
Gradium recommends sending whole words or phrases (punctuation attached to the
word before it), never one sub-word token per message, and about 80 characters
at most per message. :class:`PhraseAggregator` turns a token stream into such
chunks.

Unlike Pipecat's own aggregators, chunks are **not stripped**: the whitespace
between two chunks travels as the trailing whitespace of the earlier one, so the
concatenation of every chunk plus :meth:`PhraseAggregator.flush` equals the
input exactly.

Rules:

* A *word* is a maximal run of non-whitespace characters; a tag counts as one
  character of it, even if the tag contains spaces. A word is complete only when
  the first character of the next word arrives, so the whole whitespace run after
  it (a space, a newline, a blank line) belongs to the earlier chunk. Chunks
  therefore end with whitespace (except the :meth:`~PhraseAggregator.flush`
  chunk) and never start with it, except the first chunk of an answer when the
  answer itself starts with whitespace (the service may ``lstrip`` that chunk),
  and a chunk following :meth:`~PhraseAggregator.take_ready_text` (see there).
* CJK full-width punctuation (``。！？、，；：``, plus closing quotes or brackets
  after it) also ends a word when the next character is not whitespace, because
  those scripts do not put spaces between words. Such a chunk ends with the
  punctuation instead of whitespace.
* A word ending in clause punctuation (``, ; :`` and their CJK forms) or sentence
  punctuation (``. ! ? …`` and ``。！？``) is a boundary candidate. Closing quotes,
  brackets, Markdown ``*``/``_`` and tags after the mark are ignored, so
  ``"Yes."`` and ``Hello, <flush>`` end with punctuation.
* First chunk of an answer (``PHRASE`` and ``SENTENCE`` modes): emitted once it
  holds ``first_chunk_words`` complete words, or at the first complete word that
  ends with clause or sentence punctuation (``"Well, "`` alone is fine).
* Under load (the aggregator's ``loaded()`` is true while the event loop runs
  late, see :mod:`pipecat_gradium.loop_lag`), the first chunk waits for
  ``loaded_first_chunk_words`` complete words or sentence punctuation instead,
  so its audio lasts through the token burst that slows the loop.
* The first chunk (in every mode) never ends right after an abbreviation, title,
  initial or ordinal in the aggregator's ``language``
  (:func:`~pipecat_gradium.abbreviations.is_abbreviation`: ``"Dr."``, ``"e.g."``,
  ``"J."``, German ``"3."``): the service sends a ``<flush>`` after it, and Gradium
  would say "Doctor." like a sentence's end. Such a word waits for the next one
  (``"Dr. Smith "``), and so does a quiet flush of the first chunk.
* Later chunks: ``PHRASE`` mode emits at sentence punctuation, or at clause
  punctuation once the chunk holds at least two words (so a lone ``"so, "``
  merges with what follows). ``SENTENCE`` mode emits only at sentence
  punctuation. ``WORD`` mode emits every complete word, the first one included.
* Ramp (``PHRASE`` mode): the chunks right after the first also end once they
  hold ``ramp_chunk_words[0]``, ``ramp_chunk_words[1]``... words (default 4,
  then 8); every chunk counts as a step, a quiet flush or a ``max_chars`` cut
  included. The first chunk's audio lasts about a second; the ramp gets the next
  words to Gradium well before it runs out instead of when the first clause
  ends (80 characters later, with no comma), which on a loaded host came too
  late.
* ``max_chars``: a chunk is closed before the word whose characters would take it
  past ``max_chars`` (checked as the word streams in, so no waiting for it to
  end); a single word longer than ``max_chars`` goes alone once complete.
  Whitespace inside the chunk counts toward the length.
* A chunk does not end right before a word starting with ``- + # >`` or a plain
  ``<`` on the same line: Pipecat's text transforms see each chunk alone and would
  take the marker at its start for a list bullet, header or quote and drop it
  (``5 - 3`` spoken "5 3"), and its word tracking reads a chunk like
  ``"< b and c > "`` as one tag. Nor right after a word that is only such a marker
  (or ``*``): those do not count as words. Two cuts can still start a chunk with
  one: ``max_chars`` and a quiet flush taken in the gap before the marker arrives.
* Tags: ``<`` followed by an ASCII letter or ``/`` opens a tag (``<flush>``,
  ``<break time="1.5s" />``, ``</spell>``) that ends at the next ``>``. A tag is
  never split across chunks, and nothing from its ``<`` on is emitted while it is
  open. Any other ``<`` (``a < b``, ``<3``) is plain text, and so is a ``<`` whose
  tag reaches 200 characters without ``>``, so a stray ``<`` cannot hold the
  answer back forever. A tag that follows whitespace and is itself followed by
  whitespace attaches to the word before it, like punctuation
  (``Hello <break time="1s" /> world`` keeps the tag with ``Hello``); a tag
  followed directly by text leads the next word (``<spell>ABC</spell>``). Words
  made only of tags are not counted as words and never end a chunk on their own.
* Markdown spans are held whole, as one word, so Pipecat's text filters and
  transforms (``strip_markdown``, ``MarkdownTextFilter``) see them entire:
  links ``[label](url)`` (parentheses nested in the URL included), code
  backticks, and emphasis ``*..*``, ``**..**``, ``_.._``, ``__..__`` (an
  opener starts a word and hugs the text after it, so ``* item``, ``2 * 3`` and
  ``snake_case`` are plain text). A span still open after ``MAX_SPAN_CHARS``
  characters is released: its opener is plain text and what followed is rescanned.
* Quiet flush (:meth:`~PhraseAggregator.take_ready_text`) follows the same rule:
  a word is complete only when whitespace (or a tag after whitespace) follows
  it, so ``"about 3."`` is not taken before ``"14"`` can arrive.

On the wire (:func:`wire_text`, :func:`split_message`): control characters
become spaces, a ``<`` outside Gradium's two tags is sent as ``‹`` (Gradium may
read ``< b and c >`` as a tag and drop it), and a message longer than
``max_chars`` is cut after whitespace (inside a word only when the word alone is
longer), never inside a tag.

The logic is synchronous (:meth:`PhraseAggregator.feed`) and takes amortized
constant time per character (the characters after a ``<`` that turns out to be
plain are rescanned, at most 200 of them per such ``<``). The result does not
depend on how the text was split into tokens; only
:meth:`~PhraseAggregator.take_ready_text` depends on when it is called.
"""

import re
from collections.abc import AsyncIterator, Callable, Sequence
from enum import IntEnum, StrEnum

from pipecat.utils.text.base_text_aggregator import Aggregation, BaseTextAggregator, TextType

from pipecat_gradium.abbreviations import is_abbreviation

__all__ = [
    "ChunkMode",
    "PhraseAggregator",
    "GRADIUM_FLUSH",
    "GRADIUM_TAG",
    "LT_STAND_IN",
    "clean_text",
    "split_message",
    "wire_text",
]

MAX_TAG_CHARS = 200
"""Longest tag, brackets included; a longer ``<...`` is treated as plain text."""

MAX_SPAN_CHARS = 300
"""Longest markdown span held whole, markers included; a longer one is released as text."""

_SENTENCE_MARKS = frozenset(".!?…。！？｡‼⁇⁈⁉؟।")
_CLAUSE_MARKS = frozenset(",;:、，；：､")
# Full-width marks end a word even without a following space (CJK has none).
_HARD_MARKS = frozenset("。！？｡、，；：､")
# Transparent after a mark: '"Yes."' or '**Note:**' still ends with the mark.
_CLOSERS = frozenset("\"'”’»)]}›」』）】〕〉》*_")

GRADIUM_FLUSH = re.compile(r"<\s*flush\s*/?\s*>")
"""Gradium's ``<flush>`` tag, as :data:`GRADIUM_TAG` reads it."""

GRADIUM_TAG = re.compile(
    GRADIUM_FLUSH.pattern
    + r"""|<\s*break\s+time\s*=\s*["']?\s*[0-9.]+\s*(?:ms|s)?\s*["']?\s*/?\s*>"""
)
"""The tags Gradium documents: ``<flush>`` and ``<break time="1.5s" />``."""

LT_STAND_IN = "\u2039"
"""What a ``<`` that is not part of a Gradium tag is sent as: ``‹`` cannot open a tag."""

# Control characters other than tab and newline: each becomes one space.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    r"""Replace control characters (``\x00``, ``\x1b``, ``\r``...) with spaces.

    Tab and newline stay. One character in, one character out, so positions in the text
    (and its words, which a control character may separate but never joins) are kept.

    Args:
        text: Text on its way to Gradium.

    Returns:
        The text without control characters.
    """
    return _CONTROL.sub(" ", text)


def wire_text(text: str) -> str:
    """The text as it goes on the wire: :func:`clean_text`, and every stray ``<`` escaped.

    How Gradium reads a ``<`` that does not open one of its tags is not documented: it may
    drop everything up to a later ``>`` ("a < b and c > d"). So every ``<`` outside
    :data:`GRADIUM_TAG` is sent as :data:`LT_STAND_IN`. One character in, one out.

    Args:
        text: Text on its way to Gradium (tags must not be split across calls).

    Returns:
        The text to put in a ``text`` message.
    """
    text = clean_text(text)
    if "<" not in text:
        return text
    out: list[str] = []
    pos = 0
    for m in GRADIUM_TAG.finditer(text):
        out.append(text[pos : m.start()].replace("<", LT_STAND_IN))
        out.append(m.group(0))
        pos = m.end()
    out.append(text[pos:].replace("<", LT_STAND_IN))
    return "".join(out)


def split_message(text: str, max_chars: int) -> list[str]:
    """Cut a message longer than ``max_chars`` into messages that fit.

    Cuts go after whitespace, so words stay whole; only a word longer than ``max_chars``
    is cut inside, and never inside a tag (a single tag longer than ``max_chars`` goes
    alone). The pieces join back to ``text``.

    Args:
        text: One message's text, with any stray ``<`` already escaped.
        max_chars: The longest message.

    Returns:
        The messages, in order (``[text]`` when it fits).
    """
    pieces: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        limit = start + max_chars
        cut = limit
        while cut > start and not text[cut - 1].isspace():
            cut -= 1
        if cut == start:  # one word longer than max_chars: cut it, outside any tag
            cut = limit
            lt = text.rfind("<", start, cut)
            if lt != -1 and text.find(">", lt, cut) == -1:
                cut = lt if lt > start else text.find(">", lt) + 1 or len(text)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


# No chunk starts with these mid-line. Pipecat's strip_markdown removes them at the start of a
# line, so at the start of a chunk: list bullets, headers, quotes. And Pipecat's word tracking
# reads a chunk starting with "<" and holding a ">" ("< b and c > ") as one tag, no words.
# ("*" is left out: "**bold**" and "*it*" start words far more often than a "* " bullet
# mid-line, and holding the boundary would delay a first phrase like "Here are **three**".)
_NO_CHUNK_START = frozenset("-+#><")
# Words that are only a list bullet, a header or a quote marker: not counted as words and never
# the end of a chunk, so "\n- " is never a chunk's tail (strip_markdown keeps a bullet it cannot
# see the item of).
_BARE_MARKERS = frozenset(("-", "+", "*", ">", "#", "##", "###", "####", "#####", "######"))

# Punctuation class of a word's last significant character.
_NONE, _CLAUSE, _SENTENCE = 0, 1, 2

# Markdown span kinds (see _md_step).
_MD_CODE, _MD_LINK_TEXT, _MD_LINK_AFTER, _MD_LINK_URL, _MD_STAR, _MD_UNDER = range(1, 7)


class ChunkMode(StrEnum):
    """Where :class:`PhraseAggregator` ends chunks after the first one.

    Attributes:
        WORD: Every complete word is a chunk (lowest latency, most messages).
        PHRASE: Chunks end at clause or sentence punctuation (default).
        SENTENCE: Chunks end at sentence punctuation only.
    """

    WORD = "word"
    PHRASE = "phrase"
    SENTENCE = "sentence"


class _State(IntEnum):
    LEAD = 0  # only whitespace pending: no word started yet
    WORD = 1  # inside a word
    HARD = 2  # inside a word, right after a full-width mark (word may end here)
    GAP = 3  # in the whitespace run after a word
    LT = 4  # just after '<': tag or plain text not known yet
    TAG = 5  # inside an open tag
    AFTER_TAG = 6  # a tag after a word's end just closed: attach or lead not known yet


class PhraseAggregator(BaseTextAggregator):
    """Aggregates LLM tokens into whole-word phrases for Gradium's TTS.

    See the module docstring for the chunking rules. Each yielded
    :class:`Aggregation` keeps its trailing whitespace, so the chunks concatenate
    back to the input exactly.

    Example::

        agg = PhraseAggregator()
        agg.feed("The fore")  # []
        agg.feed("cast for tomorrow")  # ["The forecast for "]: three words
    """

    def __init__(
        self,
        *,
        chunking: ChunkMode | str = ChunkMode.PHRASE,
        first_chunk_words: int = 2,
        ramp_chunk_words: Sequence[int] = (4, 8),
        max_chars: int = 80,
        language: str | None = None,
        loaded_first_chunk_words: int = 0,
        loaded: Callable[[], bool] | None = None,
    ) -> None:
        """Initialize the aggregator.

        Args:
            chunking: Where later chunks end: ``"word"``, ``"phrase"`` or
                ``"sentence"``.
            first_chunk_words: The first chunk of an answer is emitted once it
                holds this many complete words (or earlier at punctuation).
            ramp_chunk_words: In ``"phrase"`` mode, the chunks after the first
                also end at these many words, in turn (``()``: punctuation only).
            max_chars: Soft maximum chunk length in characters; only a single
                longer word exceeds it.
            language: Language code, passed to the base class.
            loaded_first_chunk_words: While ``loaded()`` says the event loop runs
                late, the first chunk waits for this many complete words (or
                sentence punctuation; a clause mark alone does not end it), so
                its audio covers the burst of tokens that slows the loop. 0 (or
                no larger than ``first_chunk_words``) turns this off.
            loaded: Whether the event loop is loaded now; asked at the words of
                the first chunk only (see :mod:`pipecat_gradium.loop_lag`).

        Raises:
            ValueError: If ``chunking`` is unknown, ``first_chunk_words < 1``, a
                ramp value ``< 1``, ``max_chars < 10`` or
                ``loaded_first_chunk_words < 0``.
        """
        try:
            mode = ChunkMode(chunking)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in ChunkMode)
            raise ValueError(f"chunking must be one of {choices}, got {chunking!r}") from None
        if first_chunk_words < 1:
            raise ValueError(f"first_chunk_words must be >= 1, got {first_chunk_words}")
        if isinstance(ramp_chunk_words, (int, str)):
            raise ValueError(
                f"ramp_chunk_words must be a sequence, e.g. (4, 8), got {ramp_chunk_words!r}"
            )
        ramp = tuple(ramp_chunk_words)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ramp):
            raise ValueError(f"ramp_chunk_words must be whole numbers >= 1, got {ramp!r}")
        if max_chars < 10:
            raise ValueError(f"max_chars must be >= 10, got {max_chars}")
        if loaded_first_chunk_words < 0:
            raise ValueError(
                f"loaded_first_chunk_words must be >= 0, got {loaded_first_chunk_words}"
            )
        super().__init__(aggregation_type=TextType.SENTENCE, language=language)
        self._mode = mode
        self._first_chunk_words = first_chunk_words
        self._loaded_first_chunk_words = loaded_first_chunk_words
        self._loaded = loaded if loaded_first_chunk_words > first_chunk_words else None
        self._ramp = ramp if mode is ChunkMode.PHRASE else ()
        self._max_chars = max_chars
        self._clear()

    def _clear(self) -> None:
        # A list keeps appends O(1); a str attribute would be copied per char.
        self._buf: list[str] = []
        self._first = True
        self._chunks = 0  # chunks emitted in this answer
        self._state = _State.LEAD
        # End (exclusive) of the complete words, with their whitespace, that form
        # the chunk being built; 0 if none.
        self._cand_end = 0
        self._n_words = 0
        # The word being scanned (or, in GAP, the word just scanned).
        self._word_end = 0
        self._word_real = False  # holds a character outside tags
        self._word_punct = _NONE
        self._lt_pos = 0
        self._tag_start = 0
        # When a '<' follows a word's end, that word's completion waits until we
        # know whether a tag attaches to it. _defer_end is where the next word
        # would start; _prev_* describe the waiting word.
        self._defer_end: int | None = None
        self._prev_end = 0
        self._prev_real = False
        self._prev_punct = _NONE
        self._md_clear()

    def _md_clear(self) -> None:
        # The open markdown span, if any: its kind, where its opener starts and its length.
        self._md_kind = 0
        self._md_start = 0
        self._md_open_len = 0
        self._md_depth = 0  # parentheses nested inside a link's URL
        # A run of '*' or '_' waits for the next character to be read as opener or closer.
        self._run_char = ""
        self._run_len = 0
        self._run_start = 0
        self._run_prev = ""  # the character before the run ("" at the start)
        self._last_char = ""

    @property
    def chunking(self) -> ChunkMode:
        """The chunk mode for chunks after the first one."""
        return self._mode

    @property
    def text(self) -> Aggregation:
        """The pending (not yet emitted) text, unstripped.

        Returns:
            An :class:`Aggregation` of type ``TextType.SENTENCE``.
        """
        return Aggregation(text="".join(self._buf), type=TextType.SENTENCE)

    @property
    def is_first_chunk_pending(self) -> bool:
        """Whether the first chunk of the current answer has yet to be emitted."""
        return self._first

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Add text and yield the chunks it completes.

        Args:
            text: The next piece of text (an LLM token or any longer string).

        Yields:
            One :class:`Aggregation` of type ``TextType.SENTENCE`` per completed
            chunk, trailing whitespace included.
        """
        for chunk in self.feed(text):
            yield Aggregation(text=chunk, type=TextType.SENTENCE)

    def feed(self, text: str) -> list[str]:
        """Add text and return the chunks it completes (synchronous core).

        Args:
            text: The next piece of text (an LLM token or any longer string).

        Returns:
            The completed chunks, in order; possibly empty. None is empty.
        """
        out: list[str] = []
        # Text to rescan after an over-long '<' turned out to be plain goes on top.
        stack: list[tuple[str, int]] = [(text, 0)]
        while stack:
            s, start = stack.pop()
            for i in range(start, len(s)):
                refeed = self._step(s[i], out)
                if refeed:
                    stack.append((s, i + 1))
                    stack.append((refeed, 0))
                    break
        return out

    async def flush(self) -> Aggregation | None:
        """Return everything pending and start a new answer.

        Pending text includes a partial word or an unclosed tag. Afterwards the
        next chunk is again the first chunk of an answer.

        Returns:
            The pending text as an :class:`Aggregation` (possibly only
            whitespace), or None if nothing is pending.
        """
        pending = "".join(self._buf)
        self._clear()
        return Aggregation(text=pending, type=TextType.SENTENCE) if pending else None

    async def handle_interruption(self) -> None:
        """Drop pending text and start a new answer."""
        self._clear()

    async def reset(self) -> None:
        """Drop pending text and start a new answer."""
        self._clear()

    def take_ready_text(self) -> str:
        """Remove and return the complete words pending, for when the LLM stalls.

        Returns the text up to the end of the last whitespace run (a run at the
        very end of the buffer included). A word is complete only when whitespace
        (or a tag after whitespace) follows it, so a trailing word stays pending
        even when it ends with punctuation: ``"about 3."`` may still become
        ``"about 3.14"``. An open tag or markdown span stays pending too, and a
        whitespace-only buffer is not taken. The next chunk may then start with
        whitespace, e.g. after ``"Hello "`` is taken and ``" there"`` arrives.
        Returned text counts as a chunk, so it ends the first-chunk state.

        Returns:
            The ready text, or ``""`` if nothing is ready.
        """
        st = self._state
        if st is _State.LEAD:
            return ""
        n = len(self._buf)
        if st is _State.GAP:
            k = n
        elif self._defer_end is not None:
            # A tag (or '<') after a finished word: the word and its whitespace are ready.
            k = self._defer_end
        else:  # inside a word or a tag that leads one: up to the word's start
            k = self._cand_end
        if k == 0:
            return ""
        gap = k
        while gap > 0 and self._buf[gap - 1].isspace():
            gap -= 1
        held = self._abbreviation_before(gap) if self._first else None
        if held is not None:
            # The answer's first flush right after "Dr." would end it like a sentence: it
            # waits for the next word.
            return self._take_before(held, completed=k == self._cand_end)
        if self._marker_next(gap, k, plain_lt=False):
            return ""  # the next chunk would start with a marker
        if k == n:
            self._state = _State.LEAD
            self._defer_end = None
        elif self._defer_end is not None:
            # The waiting word went out; the tag now starts a word of its own.
            self._defer_end = None
            if st is _State.AFTER_TAG:
                self._state = _State.WORD
        self._cand_end = k
        return self._emit()

    def _take_before(self, start: int, *, completed: bool) -> str:
        """Take the ready text before the word at start, which stays pending.

        Args:
            start: Where the held word starts.
            completed: Whether that word was already added to the chunk being built (else
                it completes when the next word starts, as usual).
        """
        if start == 0:
            return ""
        held_end = self._cand_end
        self._cand_end = start
        chunk = self._emit()
        if completed:
            self._cand_end = held_end - start
            self._n_words = 1
        return chunk

    # -- character state machine -------------------------------------------

    def _step(self, c: str, out: list[str]) -> str | None:
        """Process one character; return text to re-feed after a tag fallback."""
        self._buf.append(c)
        p = len(self._buf) - 1
        st = self._state
        space = c.isspace()
        if st is not _State.TAG and (st is not _State.LT or c == "<"):
            self._md_step(c, p)
            if self._md_kind and p + 1 - self._md_start > MAX_SPAN_CHARS:
                return self._md_release()
        if st is _State.WORD:
            self._in_word(c, p)
        elif st is _State.GAP:
            if space:
                return None
            if c == "<":
                self._defer(self._word_end, p)
            else:
                self._complete(p, self._word_end, self._word_real, self._word_punct, out)
                self._start_word(c)
        elif st is _State.LEAD:
            if space:
                return None
            self._word_real = False
            self._word_punct = _NONE
            if c == "<":
                self._lt_pos = p
                self._state = _State.LT
            else:
                self._start_word(c)
        elif st is _State.HARD:
            if space:
                self._word_end = p
                self._state = _State.GAP
            elif c in _CLOSERS or c in _HARD_MARKS:
                self._plain(c)
            elif c == "<":
                self._defer(p, p)
            else:
                self._complete(p, p, self._word_real, self._word_punct, out)
                self._start_word(c)
        elif st is _State.LT:
            if (c.isascii() and c.isalpha()) or c == "/":
                self._tag_start = self._lt_pos
                self._state = _State.TAG
            else:
                self._lt_is_plain(out)
                self._in_word(c, len(self._buf) - 1)
        elif st is _State.TAG:
            if c == ">":
                self._state = _State.AFTER_TAG if self._defer_end is not None else _State.WORD
            elif p + 1 - self._tag_start >= MAX_TAG_CHARS:
                # Too long for a tag: the '<' is plain text; rescan what followed it.
                rest = "".join(self._buf[self._tag_start + 1 :])
                del self._buf[self._tag_start + 1 :]
                self._lt_is_plain(out)
                self._check_length(out)
                return rest
        else:  # AFTER_TAG
            if space:
                # The tag attaches to the waiting word, like punctuation.
                self._word_end = p
                self._word_real = self._prev_real
                self._word_punct = self._prev_punct
                self._defer_end = None
                self._state = _State.GAP
            elif c == "<":
                self._lt_pos = p
                self._state = _State.LT
            else:
                # The tag leads the next word.
                self._resolve_deferred(out)
                self._state = _State.WORD
                self._plain(c)
        if not space:
            self._check_length(out)
        return None

    def _in_word(self, c: str, p: int) -> None:
        if c.isspace() and self._md_kind:
            return  # inside a markdown span: the span is one word
        if c.isspace():
            self._word_end = p
            self._state = _State.GAP
        elif c == "<":
            self._lt_pos = p
            self._state = _State.LT
        else:
            self._plain(c)

    def _start_word(self, c: str) -> None:
        self._word_real = False
        self._word_punct = _NONE
        self._state = _State.WORD
        self._plain(c)

    def _plain(self, c: str) -> None:
        """Account for a plain non-space character of the current word."""
        self._word_real = True
        if c in _CLOSERS:
            return  # transparent: keeps the mark before it and the state
        if c in _SENTENCE_MARKS:
            self._word_punct = _SENTENCE
        elif c in _CLAUSE_MARKS:
            self._word_punct = _CLAUSE
        else:
            self._word_punct = _NONE
        self._state = _State.HARD if c in _HARD_MARKS and not self._md_kind else _State.WORD

    def _defer(self, word_end: int, p: int) -> None:
        """A '<' at p follows a finished word: wait to see if a tag attaches."""
        self._defer_end = p
        self._prev_end = word_end
        self._prev_real = self._word_real
        self._prev_punct = self._word_punct
        self._word_real = False
        self._word_punct = _NONE
        self._lt_pos = p
        self._state = _State.LT

    def _resolve_deferred(self, out: list[str], plain_lt: bool = False) -> None:
        """Complete the waiting word; the tags and '<' after it start a new word."""
        assert self._defer_end is not None
        end, self._defer_end = self._defer_end, None
        self._complete(end, self._prev_end, self._prev_real, self._prev_punct, out, plain_lt)

    def _lt_is_plain(self, out: list[str]) -> None:
        if self._defer_end is not None:
            self._resolve_deferred(out, plain_lt=True)
        self._word_real = True
        self._word_punct = _NONE
        self._state = _State.WORD

    def _check_length(self, out: list[str]) -> None:
        # The word in progress no longer fits: close the chunk before it now.
        if self._cand_end and len(self._buf) > self._max_chars:
            out.append(self._emit())

    def _complete(
        self,
        end: int,
        word_end: int,
        real: bool,
        punct: int,
        out: list[str],
        plain_lt: bool = False,
    ) -> None:
        """Add the word ending at word_end (whitespace through end) to the chunk."""
        if self._cand_end and word_end > self._max_chars:
            shift = self._cand_end
            out.append(self._emit())
            end -= shift
            word_end -= shift
        self._cand_end = end
        if real and self._bare_marker(word_end):
            real = False
        if real:
            self._n_words += 1
        if self._ends_chunk(word_end, real, punct) and not self._marker_next(
            word_end, end, plain_lt
        ):
            out.append(self._emit())

    def _bare_marker(self, word_end: int) -> bool:
        """Whether the word ending at word_end is only a bullet, header or quote marker."""
        start = word_end
        while start > 0 and word_end - start <= 6 and not self._buf[start - 1].isspace():
            start -= 1
        return "".join(self._buf[start:word_end]) in _BARE_MARKERS

    def _marker_next(self, word_end: int, end: int, plain_lt: bool) -> bool:
        """Whether the next word starts with ``- + # >`` or a plain ``<`` on the same line.

        Pipecat's text transforms see each chunk on its own, so a chunk starting with
        ``- `` ``+ `` ``# `` or ``>`` reads as a list item, header or quote there and
        loses the marker ("5 - 3" spoken "5 3"); and its word tracking takes a chunk like
        ``"< b and c > "`` for a tag with no words, so they never reach the context. Such a
        word stays in the chunk being built, unless a newline comes before it (then it is
        markdown, to be stripped).
        """
        if end >= len(self._buf) or "\n" in self._buf[word_end:end]:
            return False
        c = self._buf[end]
        return plain_lt if c == "<" else c in _NO_CHUNK_START

    def _ends_chunk(self, word_end: int, real: bool, punct: int) -> bool:
        if word_end > self._max_chars:
            return True
        if not real:
            return False
        if self._first and self._abbreviation_before(word_end) is not None:
            return False  # the first chunk carries the flush: "Dr." waits for "Smith"
        if self._mode is ChunkMode.WORD:
            return True
        if self._first:
            if self._loaded is not None and self._loaded():
                return punct == _SENTENCE or self._n_words >= self._loaded_first_chunk_words
            return punct != _NONE or self._n_words >= self._first_chunk_words
        if self._mode is ChunkMode.PHRASE:
            if self._chunks <= len(self._ramp) and self._n_words >= self._ramp[self._chunks - 1]:
                return True
            return punct == _SENTENCE or (punct == _CLAUSE and self._n_words >= 2)
        return punct == _SENTENCE

    def _abbreviation_before(self, word_end: int) -> int | None:
        """Where the word ending at word_end starts, if it is an abbreviation; else None.

        An abbreviation, title, initial or ordinal in the aggregator's language (see
        :func:`~pipecat_gradium.abbreviations.is_abbreviation`): a flush right after it
        would have Gradium speak it as a sentence's end ("Doctor.", "drei.").
        """
        buf = self._buf
        last = word_end - 1
        while last >= 0 and buf[last] in _CLOSERS:
            last -= 1
        if last < 0 or buf[last] != ".":
            return None
        start = word_end
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = "".join(buf[start:word_end])
        if is_abbreviation(word, before="".join(buf[:start]), language=self.language):
            return start
        return None

    def _emit(self) -> str:
        """Remove and return buf[:cand_end], shifting the stored positions."""
        k = self._cand_end
        chunk = "".join(self._buf[:k])
        del self._buf[:k]
        self._cand_end = 0
        self._n_words = 0
        self._first = False
        self._chunks += 1
        self._word_end -= k
        self._lt_pos -= k
        self._tag_start -= k
        self._prev_end -= k
        self._md_start -= k
        self._run_start -= k
        if self._defer_end is not None:
            self._defer_end -= k
        return chunk

    # -- markdown spans -------------------------------------------------------

    def _md_step(self, c: str, p: int) -> None:
        """Track markdown spans so no chunk ends inside one (O(1) per character)."""
        prev, self._last_char = self._last_char, c
        if self._run_char:
            if c == self._run_char:
                self._run_len += 1
                return
            self._md_resolve_run(c)
        kind = self._md_kind
        if kind == _MD_CODE:
            if c == "`":
                self._md_kind = 0
            return
        if kind == _MD_LINK_TEXT:
            if c == "]":
                self._md_kind = _MD_LINK_AFTER
            return
        if kind == _MD_LINK_AFTER:
            if c == "(":
                self._md_kind = _MD_LINK_URL
                self._md_depth = 0
                return
            self._md_kind = kind = 0  # "[1]" and the like: closed, and c may open a span
        if kind == _MD_LINK_URL:
            if c == "(":
                self._md_depth += 1
            elif c == ")":
                if self._md_depth == 0:
                    self._md_kind = 0
                else:
                    self._md_depth -= 1
            return
        if c == "*" or c == "_":
            self._run_char, self._run_len, self._run_start, self._run_prev = c, 1, p, prev
        elif not kind and (c == "`" or c == "["):
            self._md_open(_MD_CODE if c == "`" else _MD_LINK_TEXT, p, 1)

    def _md_resolve_run(self, after: str) -> None:
        """Read a run of '*' or '_' as an opener, a closer or plain text, given what follows."""
        char, before = self._run_char, self._run_prev
        self._run_char = ""
        kind = _MD_STAR if char == "*" else _MD_UNDER
        if self._md_kind == kind:
            # A closer hugs the text before it; '_' also ends a word (snake_case stays text).
            if before and not before.isspace() and (char == "*" or not after.isalnum()):
                self._md_kind = 0
        elif not self._md_kind and not before.isalnum() and after and not after.isspace():
            # An opener starts a word and hugs the text after it ("* item" is a bullet).
            self._md_open(kind, self._run_start, self._run_len)

    def _md_open(self, kind: int, start: int, length: int) -> None:
        self._md_kind = kind
        self._md_start = start
        self._md_open_len = length

    def _md_release(self) -> str:
        """An unclosed span grew past MAX_SPAN_CHARS: its opener is text; rescan the rest."""
        keep = self._md_start + self._md_open_len
        rest = "".join(self._buf[keep:])
        del self._buf[keep:]
        self._md_clear()
        self._last_char = self._buf[-1]
        # Inside a span the state machine stayed in one word; it resumes just after the opener.
        self._state = _State.WORD
        self._word_real = True
        self._word_punct = _NONE
        return rest
