"""Keeps a long call inside a small model's context by summarizing its older turns."""

import asyncio

from loguru import logger
from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.utils.context.llm_context_summarization import (
    DEFAULT_SUMMARIZATION_PROMPT,
    LLMContextSummarizationUtil,
)

KEPT_MESSAGES = 2
"""The latest messages, kept word for word: the caller's last turn and the reply before it."""


async def summarize_older_turns(llm: LLMService, context: LLMContext, max_tokens: int) -> int:
    """Replace all but the last two messages of `context` (after its system message, if it
    starts with one) with a summary of them that `llm` writes in at most an eighth of
    `max_tokens`, the conversation's budget. Returns how many messages were replaced: 0 when
    there were too few, nothing was written, or the context was replaced meanwhile."""
    chosen = LLMContextSummarizationUtil.get_messages_to_summarize(context, KEPT_MESSAGES)
    if not chosen.messages:
        return 0
    transcript = LLMContextSummarizationUtil.format_messages_for_summary(chosen.messages)
    summary = await llm.run_inference(
        LLMContext(messages=[{"role": "user", "content": f"Conversation history:\n{transcript}"}]),
        max_tokens=max_tokens // 8,
        system_instruction=DEFAULT_SUMMARIZATION_PROMPT,
    )
    messages = context.get_messages()
    end = chosen.last_summarized_index + 1
    start = end - len(chosen.messages)
    if not summary or not summary.strip() or messages[start:end] != chosen.messages:
        return 0
    context.set_messages(
        [
            *messages[:start],
            {"role": "user", "content": f"Conversation summary: {summary.strip()}"},
            *messages[end:],
        ]
    )
    return len(chosen.messages)


def fit_request(context: LLMContext, max_tokens: int) -> LLMContext:
    """`context` if it fits in `max_tokens` (estimated); else a copy that leaves out its oldest
    turns (after the system message, if it starts with one), cut where a caller's turn begins so
    no tool call loses its result, down to the last caller turn if nothing shorter fits."""
    if LLMContextSummarizationUtil.estimate_context_tokens(context) <= max_tokens:
        return context
    messages = context.get_messages()
    head = messages[:1] if messages and _role(messages[0]) == "system" else []
    trimmed = context
    for start in range(len(head) + 1, len(messages)):
        if _role(messages[start]) != "user":
            continue
        trimmed = LLMContext(
            messages=[*head, *messages[start:]],
            tools=context.tools,
            tool_choice=context.tool_choice,
        )
        if LLMContextSummarizationUtil.estimate_context_tokens(trimmed) <= max_tokens:
            break
    return trimmed


def _role(message) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


class ContextSummarizer(FrameProcessor):
    """Once the conversation sent to the LLM passes ``max_tokens`` (estimated, 4 characters a
    token), the LLM summarizes all but its last two messages in the background
    (`summarize_older_turns`), and the summary replaces them in the context for the turns
    that follow.

    Sits right before the LLM. Built from Pipecat's summarization pieces, but not its auto
    summarization: that one drops or supersedes its request when the caller speaks, so in a
    call whose turns come faster than the model writes a summary (10 s for SmolLM2 on a busy
    CPU), no summary ever landed and the call ran out of context. Here a summary in flight
    survives interruptions.

    With ``max_request_tokens``, a request that would still pass it (turns coming faster than
    a summary is written) goes to the LLM without its oldest turns (`fit_request`); the
    conversation itself, which the summary replaces, keeps them.
    """

    def __init__(
        self, llm: LLMService, max_tokens: int, max_request_tokens: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self._llm = llm
        self._max_tokens = max_tokens
        self._max_request_tokens = max_request_tokens
        self._task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            tokens = LLMContextSummarizationUtil.estimate_context_tokens(frame.context)
            # A speculative context is a provisional copy: a summary of it would be lost.
            if self._task is None and tokens >= self._max_tokens and not frame.speculation:
                self._task = self.create_task(self._summarize(frame.context), "summarize")
            if self._max_request_tokens and tokens > self._max_request_tokens:
                fitted = fit_request(frame.context, self._max_request_tokens)
                frame = LLMContextFrame(fitted, speculation=frame.speculation)
        await self.push_frame(frame, direction)

    async def _summarize(self, context: LLMContext) -> None:
        try:
            replaced = await summarize_older_turns(self._llm, context, self._max_tokens)
            logger.info(f"{self}: {replaced} messages replaced by a summary")
        except Exception as exc:  # the next turn tries again; the conversation goes on meanwhile
            logger.warning(f"{self}: summarizing the conversation failed: {exc}")
        finally:
            self._task = None

    async def cleanup(self):
        await super().cleanup()
        if self._task:
            await self.cancel_task(self._task)
