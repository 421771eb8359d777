"""What a session client may send (app/calls/protocol.py) and what each event does in the
pipeline (processors/client_events.py)."""

import json

import pytest
from pipecat.frames.frames import (
    CancelWorkerFrame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    LLMContextUserTurnFrame,
    LLMMessagesAppendFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.tests.utils import run_test

from app.calls.protocol import MAX_TEXT_CHARS, SessionProtocolSerializer, check_client_event
from processors.client_events import ClientEventReceiver
from processors.frames import ClientProtocolErrorFrame

pytestmark = pytest.mark.storage_free


@pytest.mark.parametrize(
    "event",
    [
        {"type": "input.text", "text": "When do you open?"},
        {"type": "tool.result", "call_id": "call_1", "result": {"ok": True}},
        {"type": "tool.result", "call_id": "call_1", "result": None},  # a null result is a result
        {"type": "session.end"},
        {"type": "session.end", "reason": "bye"},  # unknown extra keys are let through
    ],
)
def test_valid_events_pass_unchanged(event):
    assert check_client_event(json.dumps(event)) == event


@pytest.mark.parametrize(
    "text, code",
    [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ('["input.text"]', "invalid_event"),
        ('"session.end"', "invalid_event"),
        ("{}", "invalid_event"),
        ('{"type": 3}', "invalid_event"),
        ('{"type": "dance"}', "unknown_event"),
        ('{"type": "Session.End"}', "unknown_event"),
        ('{"type": "input.text"}', "invalid_event"),
        ('{"type": "input.text", "text": "   \\n"}', "invalid_event"),
        ('{"type": "input.text", "text": 42}', "invalid_event"),
        ('{"type": "tool.result", "result": 1}', "invalid_event"),
        ('{"type": "tool.result", "call_id": 7, "result": 1}', "invalid_event"),
        ('{"type": "tool.result", "call_id": "c"}', "invalid_event"),
        (json.dumps({"type": "input.text", "text": "a" * MAX_TEXT_CHARS}), "message_too_large"),
    ],
)
def test_bad_events_are_refused_with_a_code(text, code):
    refusal = check_client_event(text)
    assert isinstance(refusal, ClientProtocolErrorFrame)
    assert refusal.code == code and refusal.message


def test_an_unknown_event_names_the_known_ones():
    refusal = check_client_event('{"type": "dance"}')
    assert refusal.message == (
        "unknown event type 'dance' (known: input.text, tool.result, session.end)"
    )


async def test_the_serializer_checks_audio_and_resamples_it_to_the_pipeline_rate():
    serializer = SessionProtocolSerializer(sample_rate=8000)
    await serializer.setup(
        FrameProcessorSetup(
            clock=None, task_manager=None, pipeline_worker=None, audio_in_sample_rate=16000
        )
    )
    odd = await serializer.deserialize(b"\x00\x01\x02")
    assert isinstance(odd, ClientProtocolErrorFrame) and odd.code == "invalid_audio"
    assert await serializer.deserialize(b"") is None
    frames = [await serializer.deserialize(bytes(1600)) for _ in range(20)]  # 2 s at 8 kHz
    assert all(isinstance(f, InputAudioRawFrame) and f.sample_rate == 16000 for f in frames)
    resampled = sum(len(f.audio) for f in frames)
    assert 0.9 * 64000 <= resampled <= 64000  # 2 s at 16 kHz, less what the resampler still holds


async def test_session_end_marks_the_hang_up_and_other_events_do_not():
    serializer = SessionProtocolSerializer()
    text = await serializer.deserialize('{"type": "input.text", "text": "hi"}')
    assert isinstance(text, InputTransportMessageFrame) and not serializer.hung_up
    await serializer.deserialize('{"type": "dance"}')
    assert not serializer.hung_up
    end = await serializer.deserialize('{"type": "session.end"}')
    assert end.message == {"type": "session.end"} and serializer.hung_up


async def test_typed_text_interrupts_and_becomes_a_user_turn_that_runs_the_llm():
    receiver = ClientEventReceiver()
    heard = []

    @receiver.event_handler("on_user_text")
    async def on_user_text(_receiver, text):
        heard.append(text)

    down, _up = await run_test(
        receiver,
        frames_to_send=[
            InputTransportMessageFrame(message={"type": "input.text", "text": "Are you open?"})
        ],
        expected_down_frames=[InterruptionFrame, LLMContextUserTurnFrame, LLMMessagesAppendFrame],
    )
    assert down[1].text == "Are you open?"
    assert down[2].messages == [{"role": "user", "content": "Are you open?"}] and down[2].run_llm
    assert heard == ["Are you open?"]


async def test_a_tool_result_reaches_its_handler_and_nothing_goes_down():
    receiver = ClientEventReceiver()
    results = []

    @receiver.event_handler("on_tool_result")
    async def on_tool_result(_receiver, call_id, result):
        results.append((call_id, result))

    await run_test(
        receiver,
        frames_to_send=[
            InputTransportMessageFrame(
                message={"type": "tool.result", "call_id": "c1", "result": {"ok": 1}}
            )
        ],
        expected_down_frames=[],
    )
    assert results == [("c1", {"ok": 1})]


async def test_session_end_cancels_the_call_as_a_caller_hang_up():
    _down, up = await run_test(
        ClientEventReceiver(),
        frames_to_send=[InputTransportMessageFrame(message={"type": "session.end"})],
        expected_down_frames=[],
        expected_up_frames=[CancelWorkerFrame],
    )
    assert up[0].reason == "caller_hangup"


async def test_a_protocol_error_goes_back_to_the_client_and_other_frames_pass():
    down, _up = await run_test(
        ClientEventReceiver(),
        frames_to_send=[
            ClientProtocolErrorFrame("invalid_json", "text frames must be JSON events"),
            TextFrame("passes through"),
        ],
        expected_down_frames=[OutputTransportMessageUrgentFrame, TextFrame],
    )
    assert down[0].message == {
        "type": "session.error",
        "code": "invalid_json",
        "message": "text frames must be JSON events",
    }
    assert down[1].text == "passes through"
