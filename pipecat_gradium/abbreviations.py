"""Words whose final ``.`` does not end a sentence: abbreviations, titles, initials, ordinals.

Gradium reads the text before a ``<flush>`` as finished, so a flush right after ``"Dr."`` or
German ``"Am 3."`` makes it say "Doctor." or "drei." with a sentence's closing intonation.
:func:`is_abbreviation` tells such a word from a sentence end, per language:

* the language's abbreviations come from ``sentencex``, the sentence tokenizer Pipecat itself
  uses (``pipecat.utils.string.match_endofsentence``): a word is an abbreviation when sentencex
  does not end a sentence after it (``"Dr."``, ``"e.g."``, ``"Sra."``, ``"z.B."``, ``"bzw."``);
* forms that hold in every language: an initial (one letter, ``"J."``), a number (an ordinal
  in German, ``"3."``, or a list item, ``"1."``), letters dotted in groups (``"U.S."``,
  ``"p.ex."``);
* French and Portuguese titles sentencex does not list (it ends a sentence after ``"Mme."``);
* ``"OK."`` and ``"No."``, which sentencex lists, are taken as sentences: an answer starting
  with one is far more often "OK." than "Oklahoma", "No." than "Number".

Only an answer's first chunk (and the quiet flush) ask, so the cost of a sentencex call per
word ending in ``.`` there is small.
"""

import re
from functools import lru_cache

# The native extension publishes no type stubs.
from sentencex import segment  # pyright: ignore[reportAttributeAccessIssue]

__all__ = ["is_abbreviation"]

_INITIAL = re.compile(r"[^\W\d_]\.")
_NUMBER = re.compile(r"\d+\.")
_DOTTED = re.compile(r"(?:[^\W\d_]{1,4}\.){2,}")
# Quotes, brackets and markdown around a word do not change what it is.
_AROUND = "\"'“”‘’«»‹›„()[]{}*_¿¡"
# Titles missing from sentencex's rules for these languages (case-folded, without the dot).
_TITLES = {
    "fr": frozenset("m mm mme mmes mlle mlles dr pr me mgr st ste".split()),
    "pt": frozenset("sr sra srta dr dra prof profa av exa".split()),
}
_SENTENCES = frozenset(("ok", "no"))
# What follows the word when sentencex is asked: a capital, as after a sentence end.
_PROBE = "A"


def is_abbreviation(word: str, *, before: str = "", language: str = "en") -> bool:
    """Whether a word ending in ``.`` is an abbreviation, title, initial or ordinal.

    Args:
        word: The word, as written (quotes and brackets around it are ignored).
        before: The text before it, for the tokenizer's context.
        language: A sentencex language code (``"en"``, ``"de"``...).

    Returns:
        True when its ``.`` does not end a sentence; False for a sentence end, and for a
        word not ending in a single ``.``.
    """
    core = word.strip(_AROUND)
    if not core.endswith(".") or core.endswith(".."):
        return False
    if _INITIAL.fullmatch(core) or _NUMBER.fullmatch(core) or _DOTTED.fullmatch(core):
        return True
    stem = core[:-1].casefold()
    if stem in _SENTENCES:
        return False
    if stem in _TITLES.get(language, ()):
        return True
    return not _sentence_ends_after(language, f"{before}{core}")


@lru_cache(maxsize=512)
def _sentence_ends_after(language: str, text: str) -> bool:
    spans = list(segment(language, f"{text} {_PROBE}"))
    return len(spans) > 1 and spans[-1].strip() == _PROBE
