"""Token traces: the answers an emulated LLM streams, and how fast.

The answers are fixed English text; :func:`pipecat_gradium.testing.subword_tokens` cuts them
into sub-word tokens the way LLM tokenizers often do (leading spaces, long words in pieces).
"""

from dataclasses import dataclass

from pipecat_gradium.testing import subword_tokens

# Every answer is 40 words; they differ in the length of their first sentence.
ANSWER_FIRST_6 = (
    "Sure, the forecast looks bright today. Expect clear skies through the morning, a light "
    "breeze from the west after lunch, and temperatures climbing to around twenty degrees by "
    "the afternoon, so a jacket should be enough for the evening walk."
)
ANSWER_FIRST_3 = (
    "Yes, absolutely right. The train leaves the central station at seven thirty and arrives "
    "just before ten, with one stop in the valley; I can book two seats by the window "
    "and send the tickets to your phone right now."
)
ANSWER_FIRST_20 = (
    "I checked every restaurant within a ten minute walk of your hotel and found three that "
    "still have tables tonight. The first is Italian, the second serves seafood, and the "
    "third is a small family bistro with really great reviews."
)


@dataclass(frozen=True)
class Trace:
    """How one answer is streamed.

    Attributes:
        name: Short label used in tables and charts.
        text: The answer.
        tokens_per_s: LLM token rate after the first token.
        ttft_s: LLM time to first token after ``LLMFullResponseStartFrame``.
    """

    name: str
    text: str
    tokens_per_s: float
    ttft_s: float = 0.3

    @property
    def tokens(self) -> list[str]:
        """The answer as sub-word tokens."""
        return subword_tokens(self.text)

    @property
    def first_sentence_words(self) -> int:
        """Words in the answer's first sentence."""
        end = min(i for i in (self.text.find(". "), self.text.find("? ")) if i >= 0)
        return len(self.text[: end + 1].split())


STANDARD = Trace("standard (33 tok/s, 6-word 1st)", ANSWER_FIRST_6, 33.0)
TRACES: tuple[Trace, ...] = (
    STANDARD,
    Trace("20 tok/s", ANSWER_FIRST_6, 20.0),
    Trace("60 tok/s", ANSWER_FIRST_6, 60.0),
    Trace("3-word 1st sentence", ANSWER_FIRST_3, 33.0),
    Trace("20-word 1st sentence", ANSWER_FIRST_20, 33.0),
)
#: The load runs' answer: one 20-word sentence (about 7 s of audio), spoken by every session.
CONCURRENCY_TRACE = Trace("20-word sentence", ANSWER_FIRST_20.split(". ")[0] + ".", 33.0)
