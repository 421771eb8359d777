"""A TTS text aggregator that sends a reply's first clause to synthesis on its own."""

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator


class FirstClauseTextAggregator(SimpleTextAggregator):
    """Pipecat's sentence aggregation, except that a reply's first sentence is cut at its
    first clause boundary (`, `, `; `, `: `) once it has `MIN_WORDS` words.

    A reply's first audio waits until its first chunk of text is generated and then
    synthesized, and a local TTS such as Piper synthesizes a chunk whole, so both waits
    grow with the chunk. The rest of the reply follows sentence by sentence, synthesized
    while the first clause plays.
    """

    CLAUSE_MARKS = ",;:"
    MIN_WORDS = 3

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._first_chunk = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self.aggregation_type != TextType.SENTENCE:
            async for aggregation in super().aggregate(text):
                yield aggregation
            return
        for char in text:
            if self._first_chunk and char.isspace() and self._ends_first_clause():
                clause = self.text.text
                await self.reset()
                self._first_chunk = False
                yield Aggregation(text=clause, type=TextType.SENTENCE)
                continue
            async for aggregation in super().aggregate(char):
                self._first_chunk = False
                yield aggregation

    def _ends_first_clause(self) -> bool:
        text = self.text.text
        return text[-1:] in self.CLAUSE_MARKS and len(text.split()) >= self.MIN_WORDS

    async def flush(self) -> Aggregation | None:
        self._first_chunk = True
        return await super().flush()

    async def handle_interruption(self):
        self._first_chunk = True
        await super().handle_interruption()
