"""The clock-driven call controls on their own, with a fast injected clock (1 s of call
time = 10 ms): what they say, when, and the end reason they ask for."""

import asyncio

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from processors.call_limits import InactivityMonitor, MaxDurationLimiter

pytestmark = pytest.mark.storage_free


def fast_clock(secs: float):
    return asyncio.sleep(secs / 100)


def spoken(frames) -> list[str]:
    return [f.text for f in frames if isinstance(f, TTSSpeakFrame)]


def end_reasons(frames) -> list[str]:
    return [f.reason for f in frames if isinstance(f, EndWorkerFrame)]


async def test_max_duration_says_goodbye_then_ends_once():
    limiter = MaxDurationLimiter(60, "Time is up. Goodbye!", sleep=fast_clock)
    down, up = await run_test(limiter, frames_to_send=[SleepFrame(sleep=1.0)])
    assert spoken(down) == ["Time is up. Goodbye!"]
    assert end_reasons(up) == ["max_duration"]


async def test_max_duration_not_reached():
    limiter = MaxDurationLimiter(60, "Time is up. Goodbye!", sleep=fast_clock)
    down, up = await run_test(limiter, frames_to_send=[SleepFrame(sleep=0.3)])
    assert not spoken(down) and not end_reasons(up)


async def test_inactivity_prompt_then_end():
    monitor = InactivityMonitor(
        10, "prompt", prompt="Still there?", goodbye="Bye!", sleep=fast_clock
    )
    down, up = await run_test(monitor, frames_to_send=[SleepFrame(sleep=0.5)])
    assert spoken(down) == ["Still there?", "Bye!"]
    assert end_reasons(up) == ["inactivity"]


async def test_inactivity_end_call_at_once():
    monitor = InactivityMonitor(
        10, "end_call", prompt="Still there?", goodbye="Bye!", sleep=fast_clock
    )
    down, up = await run_test(monitor, frames_to_send=[SleepFrame(sleep=0.3)])
    assert spoken(down) == ["Bye!"] and end_reasons(up) == ["inactivity"]


async def test_speech_keeps_the_call_alive():
    """The clock stops while anyone speaks, and restarts from zero when they stop."""
    monitor = InactivityMonitor(
        10, "end_call", prompt="Still there?", goodbye="Bye!", sleep=fast_clock
    )
    frames = [
        SleepFrame(sleep=0.06),
        UserStartedSpeakingFrame(),
        SleepFrame(sleep=0.2),
        UserStoppedSpeakingFrame(),
        SleepFrame(sleep=0.06),
        BotStartedSpeakingFrame(),
        SleepFrame(sleep=0.2),
        BotStoppedSpeakingFrame(),
        SleepFrame(sleep=0.06),
    ]
    down, up = await run_test(monitor, frames_to_send=frames)
    assert not spoken(down) and not end_reasons(up)  # never 100 ms (10 s) of silence in a row
