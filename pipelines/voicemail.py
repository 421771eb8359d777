"""Answering-machine detection in an outbound call's pipeline: Pipecat's `VoicemailDetector`
(after the STT) asks a classifier LLM, built from the pipeline's own LLM stage, whether a person
or a machine answered; its `TTSGate` (after the TTS) holds the agent's speech until a person is
heard. For a machine, the held speech is dropped and, once the greeting and its beep are over,
the detector leaves the message (or not) and ends the call `voicemail`; from the verdict on,
the machine is muted (`MutedAfterVoicemail`), so the agent never answers it."""

from dataclasses import dataclass

from pipecat.classifiers.llm.classifier import LLMClassifier
from pipecat.extensions.voicemail.voicemail_detector import VoicemailDetector
from pipecat.frames.frames import EndWorkerFrame, Frame, TTSSpeakFrame
from pipecat.services.llm_service import LLMService
from pipecat.turns.user_mute import BaseUserMuteStrategy

from pipelines import pipecat_compat

END_REASON = "voicemail"


@dataclass
class VoicemailAction:
    """What the call does when a machine answers: leave `message`, or (None) just hang up."""

    message: str | None = None


def build_detector(classifier_llm: LLMService, action: VoicemailAction) -> VoicemailDetector:
    """A detector whose verdict `voicemail` leaves the message after the beep and ends the call."""
    voicemail = VoicemailDetector(classifier=LLMClassifier(llm=classifier_llm))

    @voicemail.event_handler("on_voicemail_detected")
    async def on_voicemail(processor: VoicemailDetector):
        if action.message:
            await processor.push_frame(TTSSpeakFrame(action.message))
        await processor.push_frame(EndWorkerFrame(reason=END_REASON))

    return voicemail


class MutedAfterVoicemail(BaseUserMuteStrategy):
    """Mutes the callee once the detector has heard a machine: the rest of its greeting (and
    its beep) starts no turn, so the agent's LLM never answers a machine."""

    def __init__(self, detector: VoicemailDetector):
        super().__init__()
        self._detector = detector

    async def process_frame(self, frame: Frame) -> bool:
        await super().process_frame(frame)
        return pipecat_compat.voicemail_verdict(self._detector) == "voicemail"
