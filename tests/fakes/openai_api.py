"""A local OpenAI API: the scripted chat completions of `ScriptedLLM`, and the audio API,
`POST /v1/audio/transcriptions` and `POST /v1/audio/speech`.

The audio routes take `Authorization: Bearer <key>` and answer a wrong key with OpenAI's 401 error shape.
Transcriptions take a multipart form (`file`: a WAV, `model`, `language`, optional `prompt`,
`temperature`, `response_format` `json` or `text`) and answer `{"text", "usage"}`, transcribed by
the local Whisper model (usage in tokens for the `gpt-*` models, in seconds for `whisper-1`).
Speech takes JSON (`model`, `input`, `voice`, `response_format: pcm` (the only one this fake serves), optional
`instructions`, `speed`) and streams the local Piper voice as 24 kHz 16-bit mono audio.
"""

import asyncio
import io
import wave

from aiohttp import web

from tests.audio import speech
from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.speech import Transcriber

SPEECH_RATE = 24000
VOICES = {
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable",
    "marin", "nova", "onyx", "sage", "shimmer", "verse",
}  # fmt: skip
CHUNK_BYTES = 4800


class FakeOpenAI(ScriptedLLM):
    def __init__(self, api_key: str = "sk-openai-test-key"):
        super().__init__()
        self.api_key = api_key
        self.transcriptions: list[dict] = []
        """Each transcription request's form fields (the file as its seconds of audio)."""
        self.speech_requests: list[dict] = []
        self.rejected = 0
        self.transcriber = Transcriber()

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speech)

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        self.rejected += 1
        return _error(401, "Incorrect API key provided.", "invalid_api_key")

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        if refusal := self._refusal(request):
            return refusal
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField) or "model" not in form:
            return _error(400, "'file' and 'model' are required.", None)
        with wave.open(io.BytesIO(upload.file.read()), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        seconds = len(pcm) / 2 / rate
        fields = {k: v for k, v in form.items() if k != "file"}
        self.transcriptions.append({**fields, "seconds": seconds})
        words = await asyncio.to_thread(self.transcriber.words, pcm, rate)
        text = " ".join(w.text for w in words)
        response_format = fields.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=text)
        if response_format != "json":
            return _error(400, f"fake: response_format {response_format} unsupported", None)
        model = str(fields["model"])
        if model.startswith("whisper"):
            usage: dict = {"type": "duration", "seconds": round(seconds)}
        else:
            audio_tokens = round(seconds * 10)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": len(words),
                "total_tokens": audio_tokens + len(words),
            }
        return web.json_response({"text": text, "usage": usage})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        if refusal := self._refusal(request):
            return refusal
        body = await request.json()
        if body.get("voice") not in VOICES:
            return _error(400, f"Invalid voice: {body.get('voice')!r}", "invalid_value")
        response_format = body.get("response_format", "mp3")
        if response_format != "pcm":
            return _error(400, f"fake: response_format {response_format} unsupported", None)
        self.speech_requests.append(body)
        pcm = await asyncio.to_thread(speech, body["input"], SPEECH_RATE, 0.0)
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(pcm), CHUNK_BYTES):
            await response.write(pcm[start : start + CHUNK_BYTES])
        await response.write_eof()
        return response


def _error(status: int, message: str, code: str | None) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status=status,
    )
