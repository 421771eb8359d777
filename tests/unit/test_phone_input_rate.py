"""A phone call's pipeline hears the caller at the carriers' 8 kHz when every service that hears
the caller takes it (no resampling), and at the config's own rate when one doesn't (Whisper)."""

import pytest

from pipelines import services
from pipelines.config import PipelineCatalog
from tests.helpers.servers import ROOT

pytestmark = pytest.mark.storage_free


@pytest.mark.parametrize(
    "name, rate",
    [
        ("cloud", 8000),  # Silero, Smart Turn, Deepgram
        ("assemblyai_elevenlabs", 8000),
        ("openai_voice", 8000),
        ("hybrid", 16000),  # Whisper
        ("local", 16000),
        ("ollama", 16000),
    ],
)
def test_phone_input_rate(name, rate):
    config = PipelineCatalog([ROOT / "examples" / "pipelines"]).get(name)
    assert services.phone_input_rate(config) == rate
