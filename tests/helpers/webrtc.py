"""A WebRTC caller as a browser makes one: an aiortc peer with a microphone that speaks on cue."""

import asyncio
import fractions
import json
import time

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

RATE = 16000
FRAME_SAMPLES = RATE // 50  # 20 ms


class CallerMicrophone(MediaStreamTrack):
    """A microphone that plays silence until told to say something, in real time."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self._pending = b""
        self._started: float | None = None
        self._pts = 0

    def say(self, pcm: bytes) -> None:
        self._pending += pcm

    async def recv(self) -> AudioFrame:
        if self._started is None:
            self._started = time.monotonic()
        wait = self._started + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        size = FRAME_SAMPLES * 2
        chunk, self._pending = self._pending[:size], self._pending[size:]
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk.ljust(size, b"\0"))
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class WebRTCCaller:
    """One call from an aiortc peer, the way the dashboard's call page makes it."""

    def __init__(self, server, agent_id: str, headers: dict[str, str]):
        self.url = f"{server.url}/v1/agents/{agent_id}/webrtc/offer"
        self.headers = headers
        self.pc = RTCPeerConnection()
        self.mic = CallerMicrophone()
        self.events: list[dict] = []
        self.loud_audio_secs = 0.0
        self.answer: dict = {}
        self._channel = None
        self._readers: list[asyncio.Task] = []

    async def connect(self) -> None:
        """Offer without candidates, then trickle them by PATCH: the call only connects if PATCH works."""
        self.pc.addTrack(self.mic)
        self._channel = self.pc.createDataChannel("events")
        self._channel.on(
            "message",
            lambda message: self.events.append({**json.loads(message), "_at": time.monotonic()}),
        )

        @self.pc.on("track")
        def on_track(track):
            self._readers.append(asyncio.create_task(self._listen(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        lines = self.pc.localDescription.sdp.splitlines()
        candidates = [line.removeprefix("a=") for line in lines if line.startswith("a=candidate:")]
        sdp = (
            "\r\n".join(
                line
                for line in lines
                if not line.startswith(("a=candidate:", "a=end-of-candidates"))
            )
            + "\r\n"
        )
        assert candidates
        async with httpx.AsyncClient(headers=self.headers, timeout=30) as http:
            response = await http.post(self.url, json={"sdp": sdp, "type": "offer"})
            assert response.status_code == 200, response.text
            self.answer = response.json()
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=self.answer["sdp"], type="answer")
            )
            trickled = [{"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0} for c in candidates]
            trickled.append(
                {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}
            )  # end of candidates
            response = await http.patch(
                self.url, json={"pc_id": self.answer["pc_id"], "candidates": trickled}
            )
            assert response.status_code == 204, response.text

    async def _listen(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            samples = frame.to_ndarray().astype(np.float64)
            if np.sqrt(np.mean(samples**2)) > 300:
                self.loud_audio_secs += frame.samples / frame.sample_rate

    def send(self, event: dict) -> None:
        self._channel.send(json.dumps(event))

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    async def wait_for(self, kind: str, timeout: float, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while len(self.of_type(kind)) < count:
            assert time.monotonic() < deadline, (
                f"no {kind} (#{count}) within {timeout}s; got {self.events}"
            )
            await asyncio.sleep(0.05)
        return self.of_type(kind)[count - 1]

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self.pc.close()
