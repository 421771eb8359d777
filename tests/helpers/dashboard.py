"""A dashboard browser session, as an HTTP client."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx


@contextmanager
def logged_in(server) -> Iterator[httpx.Client]:
    """A client logged in to the dashboard with the server's key (its cookie checked)."""
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as client:
        response = client.post("/login", data={"api_key": server.api_key, "next": "/"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        yield client
