"""A campaign's calling window, in each contact's local time (app/campaigns.py)."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.campaigns import Window, number_timezone

pytestmark = pytest.mark.storage_free

# Wednesday 3 December 2025, 15:30 UTC: 10:30 in New York, 07:30 in Los Angeles, 00:30 Thursday in Tokyo.
AT = datetime(2025, 12, 3, 15, 30, tzinfo=UTC)


def test_the_window_opens_in_each_contact_s_own_local_time():
    office = Window(start="09:00", end="17:00", days=["mon", "tue", "wed", "thu", "fri"])
    assert office.is_open(AT, "America/New_York")
    assert not office.is_open(AT, "America/Los_Angeles")  # 07:30, not yet
    assert not Window(start="09:00", end="17:00", days=["tue"]).is_open(AT, "America/New_York")


def test_a_window_past_midnight_and_its_day():
    night = Window(start="22:00", end="02:00")
    assert night.is_open(AT, "Asia/Tokyo")  # 00:30
    assert not night.is_open(AT, "America/New_York")
    assert not Window(start="22:00", end="02:00", days=["wed"]).is_open(AT, "Asia/Tokyo")


@pytest.mark.parametrize(
    "window",
    [
        {"start": "09:00", "end": "09:00"},
        {"start": "09:00", "end": "17:00", "days": []},
        {"start": "09:00", "end": "17:00", "days": ["someday"]},
        {"start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"},
        {"start": "25:00", "end": "17:00"},
    ],
)
def test_a_window_that_never_opens_or_names_nothing_real_is_refused(window):
    with pytest.raises(ValidationError):
        Window.model_validate(window)


def test_a_number_tells_its_timezone_when_its_prefix_does():
    assert number_timezone("+14155550100") == "America/Los_Angeles"
    assert number_timezone("+12125550100") == "America/New_York"
    assert number_timezone("+442071838750") == "Europe/London"
