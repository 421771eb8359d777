"""Every place Switchboard reaches into Pipecat's private state, in one module.

Each function below reads or writes something Pipecat keeps private, or skips one of its
constructors, because Pipecat 1.14 has no public way to do it; the comment on each says
what is missing. `tests/test_pipecat_compat.py` checks every attribute and hook used here
against the installed Pipecat, so an upgrade that renames one fails in CI instead of
silently doing nothing.

Not counted as reach-ins: the protected helpers Pipecat documents for subclasses and uses
in its own (`_register_event_handler`, `_call_event_handler`,
`TTSService._stream_audio_frames_from_iterator`); the test checks those too.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.extensions.voicemail.voicemail_detector import VoicemailDetector
from pipecat.flows import manager as flow_manager
from pipecat.frames.frames import Frame
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.piper.tts import PiperTTSService, PiperTTSSettings
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.base_transport import BaseTransport
from pipecat.utils.text.base_text_aggregator import BaseTextAggregator

# --- Transports and serializers ---


def transport_serializer(transport: BaseTransport) -> FrameSerializer | None:
    """The serializer a WebSocket transport was built with; None for other transports."""
    # FastAPIWebsocketTransport keeps its params (serializer included) in `_params` and has
    # no accessor; the call needs its serializer to transfer or tell a hang-up from a drop.
    return getattr(getattr(transport, "_params", None), "serializer", None)


def set_input_resampler(serializer: FrameSerializer, resampler: BaseAudioResampler) -> None:
    """Make a carrier serializer (Twilio, Telnyx, Plivo) resample the caller's audio with
    `resampler`."""
    # The carrier serializers build their input resampler in `__init__` (soxr at very high
    # quality) and take no option for its quality; they read `_input_resampler` per message.
    serializer._input_resampler = resampler  # type: ignore[attr-defined]  # every carrier serializer has one


def filter_deserialized(
    serializer: FrameSerializer, check: Callable[[Frame], Frame | None]
) -> FrameSerializer:
    """The serializer, each frame it deserializes passed through `check` (which may return
    another frame, or None to drop it)."""
    # Pipecat's WebSocket transports take one serializer and offer no hook on what it
    # deserializes; they call `serializer.deserialize` on the instance, so an instance-level
    # override sees every inbound message. A wrapping serializer would hide the carrier's
    # own class (and what the call asks of it).
    deserialize = serializer.deserialize

    async def checked(data: str | bytes) -> Frame | None:
        frame = await deserialize(data)
        return check(frame) if frame is not None else None

    serializer.deserialize = checked  # type: ignore[method-assign]  # this instance's method
    return serializer


# --- Local models shared by every call in the process ---


class _InlineSileroVADAnalyzer(SileroVADAnalyzer):
    """Silero run on the event loop. Pipecat hands each 20 ms frame to a thread of the
    analyzer's own and waits for it: 0.57 ms of CPU per frame, against 0.24 ms for the same
    window run in place (measured with 10 streams), a thread per call, and a GIL handoff
    each way."""

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)


def silero_vad_analyzer(session, params: VADParams | None = None) -> SileroVADAnalyzer:
    """A `SileroVADAnalyzer` running on an already loaded ONNX session, on the event loop."""
    # SileroVADAnalyzer.__init__ (and SileroOnnxModel.__init__) load a new ONNX session from
    # the bundled file, and take no session: skip both, set what they set. The model's
    # recurrent state stays per analyzer.
    model = SileroOnnxModel.__new__(SileroOnnxModel)
    model.session = session
    model.reset_states()
    model.sample_rates = [8000, 16000]
    analyzer = _InlineSileroVADAnalyzer.__new__(_InlineSileroVADAnalyzer)
    VADAnalyzer.__init__(analyzer, params=params)
    analyzer._model = model
    analyzer._windows_since_reset = 0
    analyzer._low_confidence_windows = 0
    return analyzer


class _SmartTurnV3OnSharedModel(LocalSmartTurnAnalyzerV3):
    """Smart Turn v3 over a given ONNX session, predicting on a given thread pool."""

    def __init__(self, *, session, executor: ThreadPoolExecutor, **kwargs):
        # LocalSmartTurnAnalyzerV3.__init__ loads a new ONNX session and takes no session:
        # skip it, set what it sets.
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = False
        self._session = session
        self._shared_executor = executor

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        # BaseSmartTurn predicts on a one-thread pool of its own, built here, and takes no
        # executor; it shuts `_executor` down in `cleanup`, so the shared pool is never put there.
        return self._shared_executor

    async def completion(self) -> TurnMetricsData | None:
        """Smart Turn's verdict on the caller's speech so far, keeping it buffered, so it can
        be asked again as the silence grows (`pipelines/endpointing.py`)."""
        # `analyze_end_of_turn` drops the buffered speech once it judges the turn complete and
        # asks nothing else; the prediction itself is the private `_process_speech_segment`.
        loop = asyncio.get_running_loop()
        _, metrics = await loop.run_in_executor(
            self._model_executor, self._process_speech_segment, list(self._audio_buffer)
        )
        return cast(TurnMetricsData | None, metrics)  # Smart Turn reports TurnMetricsData


def smart_turn_v3(session, executor: ThreadPoolExecutor) -> LocalSmartTurnAnalyzerV3:
    """A `LocalSmartTurnAnalyzerV3` on an already loaded ONNX session and a shared pool."""
    return _SmartTurnV3OnSharedModel(session=session, executor=executor)


def piper_tts_service(
    *,
    voice,
    settings: PiperTTSSettings,
    service_class: type[PiperTTSService] = PiperTTSService,
    **kwargs,
) -> PiperTTSService:
    """A `PiperTTSService` (or `service_class`, a subclass) speaking with an already loaded
    `PiperVoice`; `kwargs` go to `TTSService`."""
    # PiperTTSService.__init__ loads (or downloads) the voice itself and takes no loaded one:
    # skip it, make the TTSService it makes, and give it the voice it reads in `run_tts`.
    tts = service_class.__new__(service_class)
    # As its __init__ does: every field given (None where Piper has no such setting), or
    # Pipecat logs an error at every call's start.
    complete = PiperTTSSettings(model=None, voice=None, language=None)
    complete.apply_update(settings)
    TTSService.__init__(
        tts, push_start_frame=True, push_stop_frames=True, settings=complete, **kwargs
    )
    tts._voice = voice
    return tts


def set_tts_text_aggregator(tts: TTSService, aggregator: BaseTextAggregator) -> None:
    """Make a TTS service cut the LLM's text into chunks with `aggregator`."""
    # TTSService builds a SimpleTextAggregator in `__init__`; the `text_aggregator` option
    # that once replaced it is gone in 1.14.
    tts._text_aggregator = aggregator  # type: ignore[assignment]  # any BaseTextAggregator works


class WhisperSTTServiceOnModel(WhisperSTTService):
    """`WhisperSTTService` transcribing with a model object it is given (anything with
    faster-whisper's `transcribe`), not one it loads by name."""

    def __init__(self, *, whisper_model, **kwargs):
        self._given_model = whisper_model
        super().__init__(**kwargs)

    def _load(self):
        # WhisperSTTService.__init__ calls `_load`, which builds a WhisperModel from the
        # settings' model name, and takes no loaded model; `run_stt` reads `_model`.
        self._model = self._given_model


def segment_audio(stt: SegmentedSTTService) -> bytes:
    """The audio a segmented STT service has buffered for the current segment."""
    # SegmentedSTTService buffers the segment in `_audio_buffer` and exposes nothing of it
    # until the VAD ends the segment; speculative transcription needs it sooner.
    return bytes(stt._audio_buffer)


def stt_user_id(stt: STTService) -> str:
    """The user the STT service's latest audio came from ("" when the transport names none)."""
    # STTService keeps it in `_user_id`, set from each audio frame, with no accessor; its own
    # services put it on their TranscriptionFrames.
    return stt._user_id


def flow_placeholders(text: str) -> list[tuple[str, str]]:
    """The `{{ key }}` placeholders FlowManager fills in `text`, as (escape, key) pairs."""
    # FlowManager fills node messages with its private `_PLACEHOLDER` pattern; checking a flow
    # before it runs must find exactly the placeholders it will fill.
    return flow_manager._PLACEHOLDER.findall(text)


# --- Voicemail detection ---


def voicemail_verdict(detector: VoicemailDetector) -> str | None:
    """The detector's verdict so far: `conversation`, `voicemail`, or None (still listening)."""
    # VoicemailDetector keeps it in `_decision` with no accessor; the verdict-time event it
    # fires is for a person only (`on_voicemail_detected` waits for the greeting to end).
    return detector._decision


async def machine_heard_elsewhere(detector: VoicemailDetector) -> bool:
    """Give the detector a machine verdict reached outside it (Twilio's answering-machine
    detection) unless it has one of its own: the held speech is dropped and the detector leaves
    its message after the quiet. True unless the detector had already heard a person."""
    # VoicemailDetector takes verdicts only from its classifier: it keeps the verdict in
    # `_decision` and acts on one in `_decide`, and has no public way to be told one. Checked
    # and set with no await between, so the first verdict is the only one.
    if detector._decision is None:
        await detector._decide("voicemail")
    return detector._decision == "voicemail"
