"""Deciding when the caller has finished: Smart Turn, re-asked as the silence grows, with a
bar that falls as it does, and the transcript as a second opinion.

Pipecat's `TurnAnalyzerUserTurnStopStrategy` asks Smart Turn once, when the VAD hears
`stop_secs` of silence, and if the answer is "not finished" waits Smart Turn's own 3 s
silence timeout. Smart Turn's verdict on the same words rises with the silence after them
("Are you open tonight?" over a phone line: 0.36 after 0.1 s, 0.77 after 0.2 s, 0.95 after
0.4 s), so a single early look often lands just under the bar and the caller hears
nothing for three seconds. Here the model is asked again every `recheck_secs` while the
caller stays quiet, and the probability it must reach falls from `threshold` to zero at
`max_silence_secs`. Where the STT transcribes during the VAD wait (local Whisper), the
transcript is a second opinion: one that reads as a finished sentence lowers the bar; one
that ends on a filler or a word that needs more ("for", "and", "um") holds the turn open
whatever Smart Turn says (on Piper's speech Smart Turn calls ~3/4 of the corpus's
unfinished fragments complete), until a longer fallback.
"""

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    InputAudioRawFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

Endpointing = Literal["fast", "balanced", "patient"]


@dataclass(frozen=True)
class EndpointingPolicy:
    threshold: float
    """Smart Turn probability a turn needs when the VAD first reports silence."""
    max_silence_secs: float
    """Silence after the caller's last word that ends the turn whatever the model says."""
    recheck_secs: float = 0.15
    transcript_weight: float = 0.3
    """How far a transcript that reads as a finished sentence lowers the bar."""
    trailing_factor: float = 1.6
    """A transcript that trails off ("for", "and", "um") holds the turn open until
    `max_silence_secs` × this, whatever Smart Turn says."""

    def bar(self, silence_secs: float, vad_stop_secs: float, finished_sentence: bool) -> float:
        """The probability needed after `silence_secs` of silence."""
        span = max(self.max_silence_secs - vad_stop_secs, 1e-3)
        left = min(max((self.max_silence_secs - silence_secs) / span, 0.0), 1.0)
        return self.threshold * left - (self.transcript_weight if finished_sentence else 0.0)


POLICIES: dict[str, EndpointingPolicy] = {
    "fast": EndpointingPolicy(threshold=0.4, max_silence_secs=0.9),
    "balanced": EndpointingPolicy(threshold=0.5, max_silence_secs=1.3),
    "patient": EndpointingPolicy(threshold=0.6, max_silence_secs=2.5),
}

_TRAILING = set(
    """a an the and or but so because if whether than to for of about my your our their his
    her its is are was were be am we i um uh er erm hmm like also just well actually
    basically""".split()
)
"""Last words that leave any sentence open."""
_PREPOSITIONS = set("at with from by as under into".split())
"""Prepositions that need an object (unlike "in" and "on", which may end a sentence as particles)."""
_TRAILING_STATEMENT = _TRAILING | _PREPOSITIONS | {"in", "on"}
"""Last words that leave a statement open (a question may end on them: "Who am I speaking with?")."""
_TRAILING_YES_NO_QUESTION = _TRAILING | _PREPOSITIONS
"""A question that asks no wh-word may end on a particle ("Can I come in?") but hardly on a
preposition that needs an object ("Could I speak with?")."""
_WH = set("who whom whose what which where when why how".split())
_SUBORDINATORS = set("if although though unless whether".split())
"""First words of a clause that needs a main clause after it ("If it's possible, …")."""
_HOLDING = (
    "let me see",
    "let me think",
    "let me check",
    "hold on",
    "hang on",
    "one moment",
    "one second",
    "just a moment",
    "just a second",
    "i mean",
)
"""Phrases a caller says to keep the turn while finding the next words."""
_WORD = re.compile(r"[a-z0-9'-]+")


def transcript_cue(text: str) -> int:
    """+1 when `text` reads as a finished sentence, -1 when it trails off, 0 when it can't tell.

    Whisper punctuates what it hears as if it were whole ("If it's possible." for "If it's
    possible, …"; "Let me see." while the caller thinks), so the words count, not only the
    final mark: a last word that needs more, a statement that is only a dependent clause, a
    phrase that holds the floor."""
    text = text.strip()
    if not text:
        return 0
    if text.endswith(("...", "…", ",", "-", "—")):
        return -1
    words = _WORD.findall(text.lower())
    question = text.endswith("?")
    if not question:
        trailing = _TRAILING_STATEMENT
    elif _WH.isdisjoint(words):
        trailing = _TRAILING_YES_NO_QUESTION
    else:
        trailing = _TRAILING
    if words and words[-1] in trailing:
        return -1
    if not question and words and words[0] in _SUBORDINATORS and "," not in text:
        return -1
    if " ".join(words).endswith(_HOLDING):
        return -1
    return 1 if text[-1] in ".?!" else 0


class AdaptiveTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Ends the caller's turn when Smart Turn's probability clears a bar that falls with
    the silence (see the module's docstring); a final transcript is still required, as in
    Pipecat's strategy, so the LLM gets the caller's words."""

    ONSET_GUARD_SECS = 0.1
    ONSET_GUARD_MAX_SECS = 0.4
    """How long past `max_silence_secs` sound (steady line noise, say) may hold the turn open."""
    SOUND_RATIO = 0.1
    """A frame within 20 dB of the turn's loudest is the caller making sound."""
    STALL_GRACE_SECS = 0.5
    """A client that sends no audio for longer than this is silent by the wall clock."""

    def __init__(self, *, turn_analyzer, policy: EndpointingPolicy, transcript_confirms: bool):
        super().__init__(turn_analyzer=turn_analyzer)
        self._policy = policy
        self._transcript_confirms = transcript_confirms
        self._speech_ended_at = 0.0
        self._probability: float | None = None
        self._loudest = 0.0
        self._heard_secs = 0.0
        """Seconds of caller audio seen: silence is counted in audio, not wall-clock, time, so a
        pipeline running behind never decides on audio it hasn't looked at yet (unless the
        audio stops coming: `_stalled_secs`)."""
        self._last_sound_at = 0.0
        self._last_frame_at = time.monotonic()
        self._predictions = 0

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._loudest = 0.0

    async def _handle_input_audio(self, frame: InputAudioRawFrame):
        await super()._handle_input_audio(frame)
        samples = np.frombuffer(frame.audio, dtype=np.int16).astype(np.float32)
        level = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        self._heard_secs += len(samples) / frame.sample_rate
        self._last_frame_at = time.monotonic()
        self._loudest = max(self._loudest, level)
        if level >= self._loudest * self.SOUND_RATIO:
            self._last_sound_at = self._heard_secs

    async def _discard_pending_end_of_turn(self):
        await super()._discard_pending_end_of_turn()
        self._probability = None

    def _finished(self) -> bool:
        """Whether the silence so far, Smart Turn's last verdict and the transcript say the
        turn is over; never while the caller is making sound the VAD hasn't yet called speech
        (the first `start_secs` of a continuation). Audio that stops coming counts as silence
        only towards the fallback: a network stall mid-pause must not lower Smart Turn's bar."""
        heard = self._heard_secs - self._speech_ended_at
        silence = heard + self._stalled_secs()
        heard_lately = self._heard_secs - self._last_sound_at < self.ONSET_GUARD_SECS
        if heard_lately and silence < self._policy.max_silence_secs + self.ONSET_GUARD_MAX_SECS:
            return False
        cue = transcript_cue(self._text) if self._transcript_confirms else 0
        fallback = self._policy.max_silence_secs * (self._policy.trailing_factor if cue < 0 else 1)
        if silence >= fallback:
            return True
        if cue < 0 or self._probability is None:
            return False
        if self._transcript_confirms and not self._text:
            return False  # the transcript is on its way (Whisper runs during the VAD wait)
        return self._probability >= self._policy.bar(heard, self._stop_secs, cue > 0)

    def _stalled_secs(self) -> float:
        """Wall-clock time since the client's audio stopped coming (a WebSocket client may stop
        streaming after speaking): silence too, or such a turn would never end."""
        return max(time.monotonic() - self._last_frame_at - self.STALL_GRACE_SECS, 0.0)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._vad_user_speaking = False
        self._vad_stopped = True
        self._stop_secs = frame.stop_secs
        self._predictions = 0
        self._speech_ended_at = self._heard_secs - frame.stop_secs
        self._timeout_task = self.task_manager.create_task(
            self._watch_silence(), f"{self}::_watch_silence"
        )

    async def _watch_silence(self):
        """Ask Smart Turn, then again `recheck_secs` after each answer, until the turn is over.
        The silence is judged every `recheck_secs` whether or not an answer has come: on a busy
        server predictions wait on the background pool, and the fallback must not wait with them."""
        prediction: asyncio.Future | None = None
        try:
            while True:
                if prediction is None:
                    self._predictions += 1
                    prediction = asyncio.ensure_future(self._turn_analyzer.completion())  # type: ignore[attr-defined]  # pipecat_compat.smart_turn_v3's
                await asyncio.wait({prediction}, timeout=self._policy.recheck_secs)
                if not prediction.done():
                    if self._finished():
                        break
                    continue
                try:
                    metrics = prediction.result()
                except Exception:  # the silence still ends the turn, at the fallback
                    logger.exception(f"{self}: Smart Turn prediction failed")
                    metrics = None
                prediction = None
                if metrics is not None:
                    self._probability = metrics.probability
                    await self.push_frame(MetricsFrame(data=[metrics]))
                if self._finished():
                    break
                await asyncio.sleep(self._policy.recheck_secs)
        except asyncio.CancelledError:
            return
        finally:
            if prediction is not None:
                prediction.cancel()  # a prediction still queued on the pool never runs
        self._timeout_task = None
        await self._end_turn()

    async def _handle_transcription(self, frame: TranscriptionFrame):
        await super()._handle_transcription(frame)
        if self._timeout_task and self._vad_stopped and not self._turn_complete:
            if self._finished():
                await self.task_manager.cancel_task(self._timeout_task)
                self._timeout_task = None
                await self._end_turn()

    async def _end_turn(self):
        logger.debug(
            f"{self}: turn over after {self._heard_secs - self._speech_ended_at:.2f} s of silence "
            f"({self._predictions} Smart Turn predictions, the last {self._probability}, "
            f"transcript {self._text!r})"
        )
        self._turn_complete = True
        self._timeout_expired = True
        await self._maybe_trigger_user_turn_stopped()
