"""A carrier's caller audio on its way into the pipeline (app/calls/audio_pacing.py): passed on
40 ms at a time, in order, with nothing lost or reordered, other frames untouched."""

import base64
import json

import pytest
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, StartFrame
from pipecat.serializers.twilio import TwilioFrameSerializer

from app.calls.audio_pacing import AudioGrouper, with_grouped_audio
from app.telephony.stream import with_prompt_caller_audio

pytestmark = pytest.mark.storage_free


def frame(byte: int) -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes([byte]) * 640, sample_rate=16000, num_channels=1)


def test_two_frames_become_one_in_order():
    grouper = AudioGrouper(2)
    out = [grouper.group(frame(i)) for i in range(5)]
    assert [f is None for f in out] == [True, False, True, False, True]
    joined = [f for f in out if f is not None]
    assert [f.audio for f in joined] == [
        bytes([0]) * 640 + bytes([1]) * 640,
        bytes([2]) * 640 + bytes([3]) * 640,
    ]
    assert all(f.sample_rate == 16000 and f.num_channels == 1 for f in joined)


async def test_a_twilio_stream_reaches_the_pipeline_in_40_ms_frames():
    params = TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=16000)
    serializer = with_grouped_audio(
        with_prompt_caller_audio(TwilioFrameSerializer("MZ1", params=params))
    )
    await serializer.setup(StartFrame(audio_in_sample_rate=16000))

    def media(payload: bytes) -> str:
        encoded = base64.b64encode(payload).decode()
        return json.dumps({"event": "media", "media": {"payload": encoded}})

    first = await serializer.deserialize(media(b"\xff" * 160))  # 20 ms of μ-law silence
    second = await serializer.deserialize(media(b"\xff" * 160))
    assert first is None and isinstance(second, InputAudioRawFrame)
    assert (
        abs(len(second.audio) - 2 * 640) <= 16
    )  # 40 ms at 16 kHz (the resampler holds a few samples)
    digit = await serializer.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}))
    assert isinstance(digit, InputDTMFFrame)  # not held with the audio
