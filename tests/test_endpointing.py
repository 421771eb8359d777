"""The end-of-turn bar: how the transcript's wording and the silence move it."""

import pytest

from pipelines.endpointing import POLICIES, transcript_cue

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
        ("okay", 0),
        ("", 0),
    ],
)
def test_transcript_cue(text, cue):
    assert transcript_cue(text) == cue


def test_the_bar_falls_with_the_silence_and_moves_with_the_transcript():
    policy = POLICIES["balanced"]
    at_stop = policy.bar(0.2, 0.2, 0)
    assert at_stop == pytest.approx(policy.threshold)
    assert policy.bar(0.6, 0.2, 0) < at_stop
    assert policy.bar(policy.max_silence_secs, 0.2, 0) == pytest.approx(0.0)
    assert policy.bar(0.2, 0.2, 1) < at_stop < policy.bar(0.2, 0.2, -1)
    fast, patient = POLICIES["fast"], POLICIES["patient"]
    assert fast.bar(0.5, 0.2, 0) < policy.bar(0.5, 0.2, 0) < patient.bar(0.5, 0.2, 0)
