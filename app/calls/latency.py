"""Latency measured by the product on every call, and the process's Prometheus metrics.

Per turn: the caller's end of speech → the agent's first audio out (voice-to-voice),
split into its parts in order (endpointing wait, transcription, turn detection, LLM, speech
synthesis, …) by Pipecat's `UserBotLatencyObserver`. Per call: the greeting latency
(client connected → first agent audio) and each barge-in's stop latency (caller
speech start → agent audio stopped, which is when Twilio's `clear` is sent). Turns and
barge-ins carry `at`, when they began (Unix seconds: the caller's end of speech, the
caller's start of speech).
"""

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver
from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
VOICE_TO_VOICE = Histogram(
    "switchboard_voice_to_voice_seconds",
    "Caller end of speech to first agent audio",
    buckets=_BUCKETS,
)
GREETING = Histogram(
    "switchboard_greeting_seconds", "Client connected to first agent audio", buckets=_BUCKETS
)
BARGE_IN = Histogram(
    "switchboard_barge_in_stop_seconds",
    "Caller speech start to agent audio stopped",
    buckets=_BUCKETS,
)
ACTIVE_SESSIONS = Gauge(
    "switchboard_active_sessions", "Calls running on this node", multiprocess_mode="livesum"
)
SESSIONS_ENDED = Counter(
    "switchboard_sessions_ended_total", "Finished calls by end reason", ["end_reason"]
)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: list[float], q: int) -> float | None:
    """The `q`th percentile of `values` (inclusive method), rounded to the millisecond; None if empty."""
    if not values:
        return None
    if len(values) == 1:
        return _round(values[0])
    return _round(statistics.quantiles(values, n=100, method="inclusive")[q - 1])


def summarize(latency: dict[str, Any]) -> dict[str, Any]:
    """The stored latency record plus its percentiles, as `GET /v1/sessions/{id}` shows it."""
    turns = [t["voice_to_voice_secs"] for t in latency.get("turns", [])]
    stops = [i["stop_secs"] for i in latency.get("interruptions", [])]
    return {
        "greeting_secs": latency.get("greeting_secs"),
        "voice_to_voice_p50_secs": percentile(turns, 50),
        "voice_to_voice_p90_secs": percentile(turns, 90),
        "barge_in_stop_p50_secs": percentile(stops, 50),
        "turns": latency.get("turns", []),
        "interruptions": latency.get("interruptions", []),
    }


class CallLatencyTracker(BaseObserver):
    """Collects one call's latency record; `on_change` persists it after each measurement."""

    def __init__(self, on_change: Callable[[dict[str, Any]], Awaitable[None]], **kwargs):
        super().__init__(observe_every_push=False, **kwargs)
        self.record: dict[str, Any] = {"greeting_secs": None, "turns": [], "interruptions": []}
        self._on_change = on_change
        self._bot_speaking = False
        self._barge_in_at: float | None = None
        self._bot_stopped_at: float | None = None
        self.turn_observer = UserBotLatencyObserver()
        self.turn_observer.add_event_handler("on_latency_breakdown", self._on_breakdown)
        self.turn_observer.add_event_handler("on_first_bot_speech_latency", self._on_greeting)

    @property
    def observers(self) -> list[BaseObserver]:
        return [self.turn_observer, self]

    async def _on_greeting(self, _observer, seconds: float) -> None:
        self.record["greeting_secs"] = _round(seconds)
        GREETING.observe(seconds)
        await self._on_change(self.record)

    async def _on_breakdown(self, _observer, breakdown: LatencyBreakdown) -> None:
        if breakdown.measured_from != "user_silence":
            return
        parts: dict[str, float] = {}
        for contribution in breakdown.contributions:
            parts[contribution.key] = parts.get(contribution.key, 0.0) + contribution.duration_secs
        VOICE_TO_VOICE.observe(breakdown.total_secs)
        self.record["turns"].append(
            {
                "at": _round(breakdown.user_turn_start_time),
                "voice_to_voice_secs": _round(breakdown.total_secs),
                "parts": {k: _round(v) for k, v in parts.items()},
            }
        )
        await self._on_change(self.record)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._bot_stopped_at = None
        elif isinstance(frame, VADUserStartedSpeakingFrame) and self._barge_in_at is None:
            # The caller began speaking `start_secs` before the VAD was sure of it.
            started = frame.timestamp - frame.start_secs
            if self._bot_speaking:
                self._barge_in_at = started
            elif self._bot_stopped_at is not None and started < self._bot_stopped_at:
                # A realtime provider's own VAD stopped the agent before this one was sure.
                stopped, self._bot_stopped_at = self._bot_stopped_at, None
                await self._barge_in(started, stopped)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            if self._barge_in_at is not None:
                barged_in, self._barge_in_at = self._barge_in_at, None
                await self._barge_in(barged_in, time.time())
            else:
                self._bot_stopped_at = time.time()

    async def _barge_in(self, barged_in: float, stopped: float) -> None:
        stop = stopped - barged_in
        BARGE_IN.observe(stop)
        self.record["interruptions"].append({"at": _round(barged_in), "stop_secs": _round(stop)})
        await self._on_change(self.record)
