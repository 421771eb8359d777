"""A dashboard browser session, as an HTTP client, and headless Chromium (Debian's package)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot_dir(tmp_path: Path) -> Path:
    """Where browser tests put their screenshots: the README's with
    SWITCHBOARD_REFRESH_SCREENSHOTS=1, else a temporary directory (the tree stays clean)."""
    return SCREENSHOTS if os.environ.get("SWITCHBOARD_REFRESH_SCREENSHOTS") == "1" else tmp_path


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is needed for the browser tests: apt-get install -y chromium"
        )


@contextmanager
def logged_in(server, key: str | None = None) -> Iterator[httpx.Client]:
    """A client logged in to the dashboard with `key` (else the server's; its cookie checked)."""
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as client:
        response = client.post("/login", data={"api_key": key or server.api_key, "next": "/"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        yield client
