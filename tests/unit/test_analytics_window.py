"""Analytics windows (app/analytics.py): defaults, UTC, bucket boundaries and refusals."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.analytics import MAX_BUCKETS, Window
from app.errors import APIError

pytestmark = pytest.mark.storage_free

NOW = datetime(2026, 12, 3, 9, 41, 7, tzinfo=UTC)


def test_the_default_window_is_the_last_seven_days():
    window = Window.parse(None, None, "day", "", NOW)
    assert (window.start, window.end, window.agent_id) == (NOW - timedelta(days=7), NOW, None)
    starts = window.bucket_starts()
    assert starts[0] == datetime(2026, 11, 26, tzinfo=UTC) and starts[-1] == datetime(
        2026, 12, 3, tzinfo=UTC
    )
    assert len(starts) == 8  # the first and last days are partly in the window


def test_buckets_are_utc_hours_or_days():
    paris = timezone(timedelta(hours=1))
    window = Window.parse(
        datetime(2026, 12, 3, 10, 30, tzinfo=paris), datetime(2026, 12, 3, 13, 0), "hour", None, NOW
    )
    assert window.start == datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    assert window.end == datetime(2026, 12, 3, 13, 0, tzinfo=UTC)  # naive times are UTC
    assert window.bucket_starts() == [
        datetime(2026, 12, 3, hour, tzinfo=UTC) for hour in (9, 10, 11, 12)
    ]
    assert window.floor(datetime(2026, 12, 3, 11, 59, 59, tzinfo=UTC)) == datetime(
        2026, 12, 3, 11, tzinfo=UTC
    )
    day = Window.parse(None, None, "day", None, NOW)
    assert day.floor(datetime(2026, 12, 1, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "bucket", "code"),
    [
        (NOW, NOW, "day", "invalid_window"),
        (NOW, NOW - timedelta(hours=1), "hour", "invalid_window"),
        (NOW - timedelta(hours=MAX_BUCKETS + 1), NOW, "hour", "window_too_large"),
        (NOW - timedelta(days=MAX_BUCKETS + 1), NOW, "day", "window_too_large"),
    ],
)
def test_empty_or_huge_windows_are_refused(start, end, bucket, code):
    with pytest.raises(APIError) as refused:
        Window.parse(start, end, bucket, None, NOW)
    assert (refused.value.status, refused.value.body.code) == (422, code)


def test_the_largest_window_is_accepted():
    window = Window.parse(NOW - timedelta(hours=MAX_BUCKETS - 1), NOW, "hour", None, NOW)
    assert len(window.bucket_starts()) == MAX_BUCKETS
