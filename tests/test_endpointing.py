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
        ("Who am I speaking with?", 1),
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
