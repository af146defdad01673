"""A scripted stand-in for an LLM, for running the browser agent offline (it is not a model).

It reads the conversation from Pipecat's context like a real LLM service and streams its answer
as sub-word tokens at an LLM's pace (a time to first token, then tokens at a steady rate), so the
TTS service, barge-in and the context aggregators behave as they would with a real model. Its
answers repeat what the user typed and, after a barge-in, first quote the last words of its previous
answer that the context holds: the words the user heard, not the text that was cut.
"""

import asyncio

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

from pipecat_gradium.testing import subword_tokens

GREETING = (
    "Hello! I am a scripted stand-in, not a language model, speaking through Gradium. "
    "Type a message below and I will answer it."
)
ANSWER = (
    "You typed: {said}. This is answer number {turn}, and it is long on purpose, so that you "
    "can type again while I am still speaking: the moment your message reaches me, I stop "
    "talking, and my next answer starts right away."
)
AFTER_BARGE_IN = "You cut me off after: {heard}. "


class ScriptedLLMService(LLMService):
    """Answers every context with a scripted reply, streamed like an LLM's tokens."""

    def __init__(
        self,
        *,
        ttft_s: float = 0.3,
        tokens_per_s: float = 33.0,
        greeting: str = GREETING,
        answer: str = ANSWER,
        **kwargs,
    ):
        """Create the stand-in.

        Args:
            ttft_s: Seconds from the request to the first token.
            tokens_per_s: Token rate after the first token.
            greeting: The first answer, before the user has said anything.
            answer: Every later answer, formatted with ``said`` (the user's last message) and
                ``turn`` (how many messages the user has sent).
            **kwargs: Passed to ``LLMService``.
        """
        # Every field given, as Pipecat expects of a service (it logs an error otherwise).
        kwargs.setdefault(
            "settings",
            LLMSettings(
                model="scripted-stand-in",
                system_instruction=None,
                temperature=None,
                max_tokens=None,
                top_p=None,
                top_k=None,
                frequency_penalty=None,
                presence_penalty=None,
                seed=None,
                filter_incomplete_user_turns=False,
                user_turn_completion_config=None,
            ),
        )
        super().__init__(**kwargs)
        self._ttft_s = ttft_s
        self._tokens_per_s = tokens_per_s
        self._greeting = greeting
        self._answer = answer
        #: Every answer's full text, in order (what was scripted, not what was heard).
        self.answers: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Answer an ``LLMContextFrame``; pass everything else on.

        Runs in the processor's frame task, so an interruption cancels the stream mid-token,
        as it cancels a real LLM's.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        text = self.reply(frame.context)
        self.answers.append(text)
        await self.push_frame(LLMFullResponseStartFrame())
        try:
            await asyncio.sleep(self._ttft_s)
            for i, token in enumerate(subword_tokens(text)):
                if i:
                    await asyncio.sleep(1.0 / self._tokens_per_s)
                await self._push_llm_text(token)
        finally:
            await self.push_frame(LLMFullResponseEndFrame())

    def reply(self, context: LLMContext) -> str:
        """The scripted answer to a conversation.

        Args:
            context: The conversation so far.

        Returns:
            The greeting when the last message is not the user's, else an answer that repeats
            the user's words (and, after a barge-in, the last words the user heard).
        """
        messages = [m for m in context.get_messages() if isinstance(m, dict)]
        if not messages or messages[-1].get("role") != "user":
            return self._greeting
        said = _text(messages[-1]).strip().rstrip(".!?") or "nothing"
        turn = sum(1 for m in messages if m.get("role") == "user")
        text = self._answer.format(said=said, turn=turn)
        heard = [_text(m) for m in messages if m.get("role") == "assistant"]
        if heard and self.answers and _words(heard[-1]) < _words(self.answers[-1]):
            last = " ".join(w.strip(".,;:!?") for w in heard[-1].split()[-4:])
            text = AFTER_BARGE_IN.format(heard=last) + text
        return text


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())
