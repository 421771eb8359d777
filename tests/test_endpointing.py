"""The end-of-turn bar: how the transcript's wording and the silence move it, and a busy
prediction pool that must not hold a turn past its fallback."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from pipelines import models, pipecat_compat
from pipelines.endpointing import POLICIES, AdaptiveTurnStopStrategy, transcript_cue

pytestmark = pytest.mark.storage_free


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Are you open tonight?", 1),
        ("My name is Sarah Johnson.", 1),
        ("No thanks.", 1),
        ("I'd like to book a table for", -1),
        ("I'd like to book a table for.", -1),
        ("My number is five five five, um.", -1),
        ("And also...", -1),
        ("Let me see,", -1),
        ("Let me see.", -1),
        ("Um, hold on.", -1),
        ("If it's possible.", -1),
        ("If it's possible, I'd like the morning.", 1),
        ("Whether it's open.", -1),
        ("If you could call me back?", 1),
        ("Thanks, I mean it.", 1),
        ("Who am I speaking with?", 1),
        ("Which room is it in?", 1),
        ("Could I speak with?", -1),
        ("Can I come in?", 1),
        ("Can you repeat that?", 1),
        ("Can I book a table for 4 at 8?", 1),
        ("It's spelled K-O-W-A-L-S-K-I.", 1),
        ("Is it possible to?", -1),
        ("The reservation is for.", -1),
        ("okay", 0),
        ("", 0),
    ],
)
def test_transcript_cue(text, cue):
    assert transcript_cue(text) == cue


def test_the_bar_falls_with_the_silence_and_a_finished_sentence_lowers_it():
    policy = POLICIES["balanced"]
    at_stop = policy.bar(0.2, 0.2, False)
    assert at_stop == pytest.approx(policy.threshold)
    assert policy.bar(0.6, 0.2, False) < at_stop
    assert policy.bar(policy.max_silence_secs, 0.2, False) == pytest.approx(0.0)
    assert policy.bar(0.2, 0.2, True) < at_stop
    fast, patient = POLICIES["fast"], POLICIES["patient"]
    assert fast.bar(0.5, 0.2, False) < policy.bar(0.5, 0.2, False) < patient.bar(0.5, 0.2, False)


def noise(level: int) -> InputAudioRawFrame:
    """20 ms of caller audio at `level` (0: silence)."""
    samples = np.random.default_rng(0).normal(0, level, 320).astype(np.int16)
    return InputAudioRawFrame(audio=samples.tobytes(), sample_rate=16000, num_channels=1)


async def spoken_turn(
    pool: ThreadPoolExecutor, words: str, answer: float | Exception | None = None
):
    """A strategy (the `fast` policy, Smart Turn on `pool`, or always answering `answer`: a
    probability, or an error to raise) that has heard a second of speech, the VAD's stop and
    the transcript `words`; and the list its turn ends are noted in."""
    analyzer = pipecat_compat.smart_turn_v3(models.smart_turn_session(), pool)
    if answer is not None:

        async def completion():
            if isinstance(answer, Exception):
                raise answer
            return TurnMetricsData(
                processor="test", is_complete=False, probability=answer, e2e_processing_time_ms=0
            )

        analyzer.completion = completion  # type: ignore[attr-defined]  # the strategy asks this
    strategy = AdaptiveTurnStopStrategy(
        turn_analyzer=analyzer, policy=POLICIES["fast"], transcript_confirms=True
    )
    await strategy.setup(
        FrameProcessorSetup(
            clock=SystemClock(),
            task_manager=TaskManager(loop=asyncio.get_running_loop()),
            pipeline_worker=None,  # type: ignore[arg-type]  # the strategy never reads it
        )
    )
    ended: list[float] = []

    @strategy.event_handler("on_user_turn_stopped")
    async def on_stopped(_strategy, _params):
        ended.append(time.monotonic())

    await strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    for level in [3000] * 50 + [0] * 10:
        await strategy.process_frame(noise(level))
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await strategy.process_frame(TranscriptionFrame(words, "caller", "", finalized=True))
    return strategy, ended


async def test_a_saturated_prediction_pool_never_holds_the_turn_past_its_fallback():
    """On a busy server Smart Turn's predictions wait on the background pool; the turn still
    ends once the caller's silence reaches the fallback, not when a prediction finally runs."""
    pool, busy = ThreadPoolExecutor(max_workers=1), threading.Event()
    pool.submit(busy.wait)  # the pool's one thread is taken
    strategy, ended = await spoken_turn(pool, "Hello there.")
    silence = 0.2
    try:
        while not ended and silence < 3:
            await strategy.process_frame(noise(0))
            silence += 0.02
            await asyncio.sleep(0.02)
        assert ended, "the turn waited on a prediction that never came"
        policy = POLICIES["fast"]
        assert silence <= policy.max_silence_secs + 3 * policy.recheck_secs
    finally:
        busy.set()
        await strategy.cleanup()
        pool.shutdown()


@pytest.mark.parametrize("answer", [0.3, RuntimeError("the model failed")])
async def test_a_stall_or_a_failed_prediction_leaves_the_turn_to_its_fallback(answer):
    """Audio that stops coming mid-pause (a network stall) counts towards the fallback only:
    Smart Turn's 0.3 on "Hello there" never clears the `fast` bar on 0.2 s of heard silence
    (0.4), so the turn ends at the fallback (0.9 s), not when the wall clock has lowered the bar
    (~0.7 s after the audio stopped). A prediction that fails ends the same way."""
    pool = ThreadPoolExecutor(max_workers=1)
    strategy, ended = await spoken_turn(pool, "Hello there", answer)
    stopped = time.monotonic()
    try:
        await asyncio.sleep(2)
        assert ended, "the turn never ended once the audio stopped"
        heard_silence = 0.2
        fallback_at = (
            AdaptiveTurnStopStrategy.STALL_GRACE_SECS
            + POLICIES["fast"].max_silence_secs
            - heard_silence
        )
        assert ended[0] - stopped >= fallback_at - 0.1, ended[0] - stopped
    finally:
        await strategy.cleanup()
        pool.shutdown()


async def test_a_client_that_stops_sending_audio_still_gets_its_turn_ended():
    """A WebSocket client may stop streaming once it has spoken: the silence then counts by the
    wall clock, so even a turn the transcript holds open ends at its (longer) fallback."""
    pool = ThreadPoolExecutor(max_workers=1)
    strategy, ended = await spoken_turn(pool, "I'd like to book a table for")
    stopped = time.monotonic()
    try:
        await asyncio.sleep(3)
        assert ended, "the turn never ended once the audio stopped"
        policy = POLICIES["fast"]
        fallback = policy.max_silence_secs * policy.trailing_factor
        waited = ended[0] - stopped
        assert (
            fallback - 0.2 <= waited <= fallback + AdaptiveTurnStopStrategy.STALL_GRACE_SECS + 0.5
        )
    finally:
        await strategy.cleanup()
        pool.shutdown()
