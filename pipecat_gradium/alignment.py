"""Gradium's word reports mapped onto the source words of the text sent.

Gradium reports one ``text`` message per word it speaks. With ``rewrite_rules`` set, it
rewrites numbers, times, prices and abbreviations before speaking them, and whether its reports
then carry the spoken words (``"twenty"``, ``"four"``) or the source words (``"24"``) is not
documented. Tags (``<flush>``, ``<break .../>``) are never reported, symbols and emoji may not
be. :class:`WordAligner` maps either kind of report back onto the source words, in one place,
for the two things that need it:

* the text frames: each report yields the source words it stands for, one :class:`ShownWord`
  each, so the assistant context holds the LLM's own ``"24"``, shown once, when Gradium starts
  speaking it, and a caption shows every source word on its own, at its own time (see
  :class:`ShownWord` for which time);
* the continuation after a cut: :meth:`WordAligner.unspoken_text` is the source text from the
  first word not wholly heard, so no word is lost and at most one is said twice.

Matching compares *keys*: a word's letters and digits, case-folded (``"Don't,"`` -> ``"dont"``).
A report matches the next source word when the keys are equal or one continues the other (a
hyphenated word reported in two parts, two words reported as one). It may pass over source
words Gradium did not report: symbols and emoji freely; up to :data:`MAX_SKIP` plain words on
an exact match; never a word that rewriting may change (:func:`rewritable`: ``"twenty"`` may
be the start of ``"24"``), except in the middle of a rewrite, where only such words may be
passed (``"24 24 items"``: both rewrites are taken for the first). A report that matches nothing
is part of a rewrite: of the current word when that one is being rewritten, else of the next.

A source word counts as heard once its key was matched in full, or once a later word started;
the word being rewritten at a cut is not heard, so it is re-sent (the one word said twice).
This relies on one assumption, since where a rewrite ends is only known when the next word
starts: **a rewrite's spoken words, other than number words and the like
(:data:`REWRITE_WORDS`), do not contain the word that follows it** (``"e.g. example"``, spoken
"for example example", breaks it: the first "example" is taken for the text's, and a cut right
there loses it; ``"24 four"`` and ``"$5 and"`` are fine). Two rewritten words in a row are one
rewrite to the aligner: a cut inside them re-sends both, and the second one is shown late
(with its own time: see :class:`ShownWord`).
"""

import re
from dataclasses import dataclass, field

from pipecat_gradium.phrases import GRADIUM_FLUSH, GRADIUM_TAG, LT_STAND_IN

__all__ = ["ShownWord", "SourceWord", "WordAligner", "rewritable", "source_words", "word_key"]

#: Source words a report may skip over, on an exact match, when Gradium dropped some.
MAX_SKIP = 3

#: Words a rewrite is made of (English): mid-rewrite, such a report goes on with the rewrite
#: even when the next source word is the same word ("$1,299.99 and": the "and" of "one
#: thousand two hundred and ninety nine" is not the text's), and such a source word may be
#: passed over (its report was taken for the rewrite's).
REWRITE_WORDS = frozenset(
    """zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
    ninety hundred thousand million billion trillion and point minus first second third fourth
    fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth fifteenth
    sixteenth seventeenth eighteenth nineteenth twentieth thirtieth hundredth thousandth a m p
    am pm oclock percent dollar dollars cent cents euro euros pound pounds pence january
    february march april may june july august september october november december""".split()
)

# How far the current source word is matched.
_DONE = 0  # in full: heard
_PARTIAL = 2  # its key's first part ("well" of "well-known")
_REWRITE = 3  # reports that match nothing: Gradium's rewrite of it ("twenty" for "24")


def word_key(word: str) -> str:
    """The letters and digits of a word, case-folded: what matching compares.

    Args:
        word: A source word or a reported word.

    Returns:
        The key; empty for punctuation, symbols and most emoji.
    """
    return "".join(c for c in word.casefold() if c.isalnum())


def rewritable(word: str) -> bool:
    """Whether Gradium's normalisation may rewrite a word: digits, or symbols inside it.

    Args:
        word: A source word.

    Returns:
        True for ``"24"``, ``"8:15"``, ``"$5"``, ``"e.g."``, ``"Dr."``; False for plain words
        with punctuation around them (``"Hello,"``, ``"(yes)"``).
    """
    if any(c.isdigit() for c in word):
        return True
    core = word.strip(_AROUND)
    return any(not c.isalnum() for c in core) or (word.endswith(".") and len(core) <= 3)


_AROUND = ".,;:!?…\"'“”‘’()[]{}*_"


@dataclass(frozen=True)
class SourceWord:
    """One word of the text sent: a run of non-whitespace between whitespace or Gradium tags.

    Attributes:
        text: The word as sent.
        start: Its offset in the request's text.
        end: The offset just past it.
        key: :func:`word_key` of the text.
    """

    text: str
    start: int
    end: int
    key: str


def source_words(text: str) -> list[SourceWord]:
    """Split text into source words; whitespace and Gradium's tags separate them.

    Args:
        text: Text as sent to Gradium, tags included.

    Returns:
        The words in order.
    """
    words: list[SourceWord] = []
    pos = 0
    for m in [*GRADIUM_TAG.finditer(text), None]:
        end = m.start() if m else len(text)
        i = pos
        while i < end:
            if text[i].isspace():
                i += 1
                continue
            j = i
            while j < end and not text[j].isspace():
                j += 1
            words.append(SourceWord(text[i:j], i, j, word_key(text[i:j])))
            i = j
        pos = m.end() if m else end
    return words


@dataclass(frozen=True)
class ShownWord:
    """One source word to show, and the report whose audio time it takes.

    Which time is a source word's own:

    * a word a report matched (``"24"`` for ``"twenty"``, or for ``"24"``): that report's start;
    * several words one report stands for (``"1111And"``): spread over that report, each at
      the share of its letters before it (``fraction``);
    * a word passed over, shown with a later word: the report that was taken for part of the
      rewrite before it but has the word's own key (``"dollars"`` of ``"24 dollars"``, spoken
      "twenty four dollars": the aligner knows "dollars" is the text's only when ``"last"``
      comes); else (Gradium did not report it: a symbol, an emoji, a dropped word) the time of
      the word after it, when Gradium was past it.

    Times therefore never go backwards, and never come before the word's own report. A word
    without letters or digits (``"🙂"``, ``"-"``, ``"&"``) is not shown alone: it leads the
    next word that has some, at that word's time (``"🙂 - thanks"``).

    Attributes:
        text: The word as the LLM wrote it (a ``<`` sent as ``‹`` is shown as ``<``), with
            any symbols before it.
        report: The index, in the request's reports, of the report whose time it takes.
        fraction: Where in that report it starts: 0 at its start, up to 1 at its end.
    """

    text: str
    report: int
    fraction: float = 0.0


@dataclass
class WordAligner:
    """Aligns one request's word reports with the text sent for it.

    Attributes:
        already_shown: Leading source words a previous request of the same answer already
            showed (a continuation re-sends the word that was cut): they are not shown again.
    """

    already_shown: int = 0
    _text: str = ""
    _words: list[SourceWord] = field(default_factory=list)
    _cur: int = -1  # the word being matched, or -1 before the first report
    _consumed: int = 0  # characters of its key matched so far
    _state: int = 0  # how far it is matched: _DONE, _PARTIAL or _REWRITE
    _shown: int = 0  # source words shown so far (all before the cursor, and the cursor)
    _heard_after: list[int] = field(default_factory=list)  # words heard after each report
    _shown_after: list[int] = field(default_factory=list)  # words shown after each report
    # Reports that showed nothing since the last word shown (a rewrite's rest), by index: a
    # source word passed over later may be one of them.
    _unshown: list[tuple[str, int]] = field(default_factory=list)
    _symbols: list[str] = field(default_factory=list)  # shown words waiting for a next word

    @property
    def text(self) -> str:
        """Everything sent, as Gradium concatenated it (tags included)."""
        return self._text

    @property
    def words(self) -> list[SourceWord]:
        """The source words of the text sent so far."""
        return self._words

    @property
    def shown(self) -> int:
        """Source words shown so far, counting the ones an earlier request showed."""
        return max(self._shown, self.already_shown)

    @property
    def reports(self) -> int:
        """Reports aligned so far."""
        return len(self._heard_after)

    def add_text(self, text: str) -> None:
        """Record text sent, exactly as concatenated by Gradium (tags never split).

        Args:
            text: One ``text`` message's text.
        """
        self.set_text(self._text + text)

    def set_text(self, text: str) -> None:
        """Set everything sent so far (it only grows, or loses a last message never reported).

        Args:
            text: The request's text, as Gradium concatenated it.
        """
        if text != self._text:
            self._text = text
            self._words = source_words(text)

    def add_report(self, word: str) -> list[ShownWord]:
        """Align one reported word.

        Args:
            word: The ``text`` of one of Gradium's word reports.

        Returns:
            The source words to show now, one each, in order (a word passed over and the
            word matched, or the words one report stands for); empty when the words it stands
            for were already shown (the rest of a rewrite, a punctuation report, a word a
            previous request showed).
        """
        key = word_key(word)
        shown = self._align(key, word.strip())
        if shown:
            self._unshown.clear()
        elif key:
            self._unshown.append((key, self.reports))
        self._heard_after.append(self._heard())
        self._shown_after.append(self.shown)
        return shown

    def shown_at(self, reports: int) -> int:
        """Source words shown once the first ``reports`` reports were aligned.

        Args:
            reports: A number of reports.

        Returns:
            The number of leading source words shown (earlier requests' included).
        """
        n = min(reports, self.reports)
        return self._shown_after[n - 1] if n > 0 else self.already_shown

    def heard(self, reports: int | None = None) -> int:
        """Source words heard, counting only the first ``reports`` reports as heard.

        Args:
            reports: How many reports (in order) had their audio fully arrive; None for all.

        Returns:
            The number of leading source words wholly heard.
        """
        n = self.reports if reports is None else min(reports, self.reports)
        return self._heard_after[n - 1] if n > 0 else 0

    def unspoken_text(self, reports: int | None = None) -> str:
        """What a continuation re-sends: the text from the first source word not wholly heard.

        ``<flush>`` tags are dropped (the continuation places its own), ``<break>`` tags and
        the spacing stay.

        Args:
            reports: How many reports had their audio fully arrive; None for all.

        Returns:
            The text, or ``""`` when every source word was heard.
        """
        heard = self.heard(reports)
        if heard >= len(self._words):
            return ""
        return GRADIUM_FLUSH.sub(_flush_gap, self._text[self._words[heard].start :])

    # -- matching -------------------------------------------------------------

    def _heard(self) -> int:
        if self._cur < 0:
            return 0
        return self._cur + 1 if self._state == _DONE else self._cur

    def _move(self, j: int, consumed: int, state: int) -> None:
        self._cur, self._consumed, self._state = j, consumed, state

    def _align(self, key: str, raw: str) -> list[ShownWord]:
        words = self._words
        cur = self._cur
        nxt = cur + 1
        # A rewrite (or a word reported in parts) is under way: its end is not known yet.
        rewriting = cur >= 0 and self._state in (_PARTIAL, _REWRITE)
        if not key:
            # A symbol or emoji reported as sent stands for that word; else for nothing new.
            if nxt < len(words) and words[nxt].text == raw:
                self._move(nxt, 0, _DONE)
                return self._show(nxt, nxt, key)
            return []
        if self._state == _PARTIAL:
            rest = words[cur].key[self._consumed :]
            if rest.startswith(key):  # "well" then "known" for "well-known"
                self._consumed += len(key)
                if self._consumed == len(words[cur].key):
                    self._state = _DONE
                return []
        skipped = 0
        j = nxt
        while j < len(words) and skipped <= MAX_SKIP:
            wk = words[j].key
            if not wk:
                j += 1
                continue
            if rewriting and key in REWRITE_WORDS:
                break  # "and" of "two hundred and ninety": the rewrite goes on
            if self._match(j, key, exact=skipped > 0):
                return self._show(nxt, j, key)
            if (rewritable(words[j].text) or wk in REWRITE_WORDS) != rewriting:
                # Mid-rewrite, only words that are rewritten too may have been passed (their
                # rewrite taken for the current one's): "four" of "24 Hello four" is not
                # the text's "four". Otherwise a rewritten word is never dropped: "twenty"
                # may be the start of "24".
                break
            skipped += not rewriting  # mid-rewrite, any number of rewritten words may pass
            j += 1
        if rewriting:
            return []  # more of the current rewrite ("four" of "twenty four")
        # The start of the next word's rewrite ("eight" for "8:15", "and" for "&").
        if nxt >= len(words):
            return []  # a report past the text sent: nothing to show
        self._move(nxt, 0, _REWRITE)
        return self._show(nxt, nxt, "")

    def _match(self, j: int, key: str, *, exact: bool) -> bool:
        """Try to start word j with the report's key; on success move the cursor there."""
        words = self._words
        wk = words[j].key
        if key == wk:
            self._move(j, len(wk), _DONE)
            return True
        if exact:
            return False
        if wk.startswith(key):  # the first part of a word reported in parts
            self._move(j, len(key), _PARTIAL)
            return True
        # Several source words reported as one ("1111And"): consume them while they fit.
        rest, m = key, j
        while m < len(words) and rest.startswith(words[m].key):
            rest = rest[len(words[m].key) :]
            if not rest:
                self._move(m, len(words[m].key), _DONE)
                return True
            m += 1
        if m > j and m < len(words) and words[m].key.startswith(rest):
            self._move(m, len(rest), _PARTIAL)
            return True
        return False

    def _show(self, first: int, matched: int, key: str) -> list[ShownWord]:
        """The words from ``first`` to the cursor, minus those already shown, each timed.

        Args:
            first: The first word not shown before this report.
            matched: The first word the report matched (``first`` up to it were passed over).
            key: The report's key; the words from ``matched`` to the cursor share it.
        """
        start = max(first, self.shown)
        self._shown = max(self._shown, self._cur + 1)
        report = self.reports
        out = [ShownWord(_as_written(w.text), at) for w, at in self._passed_times(start, matched)]
        # Matched: one report may stand for several words ("1111And"): spread over it.
        offset = 0
        for m in range(matched, self._cur + 1):
            w = self._words[m]
            if m >= start:
                share = min(offset / len(key), 1.0) if key else 0.0
                out.append(ShownWord(_as_written(w.text), report, share))
            offset += len(w.key)
        return self._symbols_joined(out, [w.key for w in self._words[start : self._cur + 1]])

    def _symbols_joined(self, shown: list[ShownWord], keys: list[str]) -> list[ShownWord]:
        """Words without letters or digits ("🙂", "-", "<") lead the next word with some.

        Pipecat's word tracking follows letters and digits only: it takes a frame's text as
        done once its last letter was reported, so a bare symbol shown after it would be
        matched into a later frame (whose text then comes out split: "t hen"). Joined to the
        next word, at that word's time, a symbol is shown once, never before its word; one
        with no word after it is not shown, nor a bare ``<``, which Pipecat reads as a tag's
        start (it completes the context with both all the same).
        """
        out: list[ShownWord] = []
        for w, key in zip(shown, keys, strict=True):
            if not key:
                if "<" not in w.text:
                    self._symbols.append(w.text)
                continue
            if self._symbols:
                w = ShownWord(" ".join([*self._symbols, w.text]), w.report, w.fraction)
                self._symbols.clear()
            out.append(w)
        return out

    def _passed_times(self, start: int, matched: int) -> list[tuple[SourceWord, int]]:
        """The words from start to matched (passed over), each with the report it takes.

        Back to front, a word takes the latest unshown report with its own key ("dollars");
        a word with none right after one that has takes the next unshown report (where its
        rewrite starts: "twenty" for the "24" of "and 24 four"); any other, the report of the
        word after it.
        """
        passed = self._words[start:matched]
        unshown = self._unshown
        found: list[int | None] = [None] * len(passed)  # positions in unshown
        limit = len(unshown)
        for i in range(len(passed) - 1, -1, -1):
            key = passed[i].key
            for p in range(limit - 1, -1, -1):
                if key and unshown[p][0] == key:
                    found[i] = limit = p
                    break
        pos = list(found)
        for i in range(1, len(passed)):
            prev = found[i - 1]
            if pos[i] is None and prev is not None:
                later = [p for p in found[i + 1 :] if p is not None]
                if prev + 1 < (later[0] if later else len(unshown)):
                    pos[i] = prev + 1
        out: list[tuple[SourceWord, int]] = []
        at = self.reports
        for w, p in zip(reversed(passed), reversed(pos), strict=True):
            if p is not None:
                at = unshown[p][1]
            out.append((w, at))
        out.reverse()
        return out


def _as_written(text: str) -> str:
    # wire_text sends every stray "<" as LT_STAND_IN, one for one.
    return text.replace(LT_STAND_IN, "<")


def _flush_gap(m: re.Match[str]) -> str:
    # A flush between two words still separates them; elsewhere it leaves nothing.
    text = m.string
    before = text[m.start() - 1 : m.start()]
    after = text[m.end() : m.end() + 1]
    return " " if before and after and not before.isspace() and not after.isspace() else ""
