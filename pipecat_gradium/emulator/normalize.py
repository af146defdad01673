"""Text normalisation, as Gradium's ``json_config.rewrite_rules`` does it (a model of it).

With ``rewrite_rules`` set (a language alias such as ``"en"``, or rule names such as
``"TimeEn,Date"``), Gradium rewrites numbers, times, dates, prices and abbreviations into words
before speaking. Its exact output is not documented; this module produces plausible spoken
words so that the client's alignment of word reports to its source text is exercised:
``"24"`` -> ``twenty four``, ``"8:15"`` -> ``eight fifteen``, ``"$1,299.99"`` -> ``one
thousand two hundred and ninety nine dollars ninety nine cents``, ``"21st"`` -> ``twenty
first``, ``"2024-03-05"`` -> ``March fifth twenty twenty four``, ``"Dr."`` -> ``doctor``.
English gets every rule; French, German, Spanish and Portuguese get numbers and prices
(``num2words`` speaks them). Punctuation after a source word stays on its last spoken word.
"""

from __future__ import annotations

import re
from enum import StrEnum

from num2words import num2words

LANGUAGES = ("en", "fr", "de", "es", "pt")


class WordReports(StrEnum):
    """What the emulator's word reports carry when a rule rewrote a word.

    Attributes:
        SPOKEN: One report per spoken word (``"twenty"``, ``"four"``).
        SOURCE: One report per source word (``"24"``), timed over its spoken words.
    """

    SPOKEN = "spoken"
    SOURCE = "source"


_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP"}
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_ABBREVIATIONS_EN = {
    "dr.": "doctor",
    "mr.": "mister",
    "mrs.": "missus",
    "st.": "saint",
    "e.g.": "for example",
    "i.e.": "that is",
    "etc.": "et cetera",
    "vs.": "versus",
    "approx.": "approximately",
}
_NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
_PRICE = re.compile(rf"^([$€£])({_NUMBER})(?:\.(\d{{2}}))?$")
_PLAIN = re.compile(rf"^(-?)({_NUMBER})(?:\.(\d+))?$")
_PERCENT = re.compile(rf"^({_NUMBER})(?:\.(\d+))?%$")
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$", re.IGNORECASE)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(am|pm|a\.m\.|p\.m\.)?$", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# Trailing punctuation kept apart from the token and put back on the last spoken word.
_TRAIL = re.compile(r"[,;:!?…)\]\"'”’]+$|(?<=\d)\.$")


def rules_language(rewrite_rules: str | None) -> str | None:
    """The language a ``rewrite_rules`` value normalises for, or None when it is unset.

    Args:
        rewrite_rules: A language alias (``"en"``) or comma-separated rule names
            (``"TimeEn,Date"``: the language is read from a name's suffix, English otherwise).

    Returns:
        One of :data:`LANGUAGES`, or None.
    """
    if not rewrite_rules:
        return None
    value = rewrite_rules.strip()
    if value.lower() in LANGUAGES:
        return value.lower()
    for name in value.split(","):
        suffix = name.strip()[-2:].lower()
        if suffix in LANGUAGES:
            return suffix
    return "en"


def _words(text: str) -> list[str]:
    # num2words writes "one thousand, two hundred and ninety-nine": say it word by word.
    return text.replace(",", " ").replace("-", " ").split()


def _number(digits: str, lang: str) -> list[str]:
    return _words(num2words(int(digits.replace(",", "")), lang=lang))


def _rewrite(token: str, lang: str) -> list[str] | None:
    """Spoken words for one token without its trailing punctuation; None to keep it."""
    if m := _PRICE.match(token):
        value = float(int(m.group(2).replace(",", "")) + int(m.group(3) or 0) / 100)
        currency = _CURRENCIES[m.group(1)]
        spoken = num2words(value, lang=lang, to="currency", currency=currency, separator="|")
        if not m.group(3):  # "$5" is "five dollars", not "five dollars, zero cents"
            spoken = spoken.split("|")[0]
        return _words(spoken.replace("|", " "))
    if m := _PERCENT.match(token):
        number = _number(m.group(1), lang)
        if m.group(2):
            number += ["point", *(_number(d, lang)[0] for d in m.group(2))]
        return [*number, "percent" if lang == "en" else "%"]
    if m := _PLAIN.match(token):
        words = ["minus"] if m.group(1) and lang == "en" else []
        words += _number(m.group(2), lang)
        if m.group(3):
            point = "point" if lang == "en" else "virgule" if lang == "fr" else "Komma"
            words += [point, *(_number(d, lang)[0] for d in m.group(3))]
        return words
    if lang != "en":
        return None
    if m := _ORDINAL.match(token):
        return _words(num2words(int(m.group(1)), to="ordinal"))
    if m := _TIME.match(token):
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or minute > 59:
            return None
        words = _number(str(hour), lang)
        if minute == 0:
            words.append("o'clock")
        elif minute < 10:
            words += ["oh", *_number(str(minute), lang)]
        else:
            words += _number(str(minute), lang)
        if m.group(3):
            words.append("a m" if m.group(3).lower().startswith("a") else "p m")
            words = " ".join(words).split()
        return words
    if m := _DATE.match(token):
        year, month, day = (int(g) for g in m.groups())
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return None
        return [
            _MONTHS[month - 1],
            *_words(num2words(day, to="ordinal")),
            *_words(num2words(year, to="year")),
        ]
    if spoken := _ABBREVIATIONS_EN.get(token.lower()):
        return spoken.split()
    return None


def spoken_words(word: str, lang: str | None) -> list[str]:
    """The words Gradium would speak for one source word under ``lang``'s rules.

    Args:
        word: A source word, as sent (punctuation attached).
        lang: The rules' language, or None for no normalisation.

    Returns:
        The spoken words; ``[word]`` when no rule applies.
    """
    if lang is None or not any(c.isdigit() or c == "." for c in word):
        return [word]
    trail = _TRAIL.search(word)
    token = word[: trail.start()] if trail else word
    try:
        spoken = _rewrite(token, lang)
    except (ValueError, OverflowError, NotImplementedError):  # num2words' limits
        spoken = None
    if not spoken:
        return [word]
    if trail:
        spoken[-1] += trail.group(0)
    return spoken
