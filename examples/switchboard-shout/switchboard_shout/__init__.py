"""An example Switchboard plugin: the processor `shout` upper-cases what the agent says, and
the service `local_openai` is an LLM on an OpenAI-compatible server at a local address.

    llm: {service: local_openai, options: {model: llama3.2}}
    processors:
      after_llm: [{name: shout, options: {exclaim: true}}]
"""

from pipecat.frames.frames import Frame, LLMTextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pydantic import BaseModel, ConfigDict

from pipelines.registry import ProcessorType
from pipelines.services import FACTORIES

OLLAMA_URL = "http://127.0.0.1:11434/v1"


class ShoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclaim: bool = False
    """End each of the agent's sentences with '!' instead of '.'."""


class Shout(FrameProcessor):
    """Upper-cases the LLM's words on their way to the TTS (and the transcript)."""

    def __init__(self, exclaim: bool):
        super().__init__()
        self._exclaim = exclaim

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            text = frame.text.upper()
            frame.text = text.replace(".", "!") if self._exclaim else text
        await self.push_frame(frame, direction)


SHOUT = ProcessorType(
    build=lambda options: Shout(options.exclaim),
    options=ShoutOptions,
    points=("after_llm", "before_tts"),
    summary="upper-cases the agent's words",
)


def local_openai(stage, ctx):
    """Switchboard's `openai` LLM service, its `base_url` Ollama's local address unless set."""
    options = {"base_url": OLLAMA_URL, "api_key": "local", **stage.options}
    return FACTORIES["openai"](stage.model_copy(update={"options": options}), ctx)
