"""A webhook receiver for the tests: records every POST, answers scripted statuses per
path (then 200), and never answers on `/hang` or a request it was told to hold."""

import asyncio
import time
from collections import defaultdict, deque

from aiohttp import web

from tests.fakes.threaded import ThreadedServer


class WebhookReceiver(ThreadedServer):
    def __init__(self):
        super().__init__()
        self.received: list[dict] = []
        """Each request: path, headers, body (bytes) and the status answered."""
        self.statuses: dict[str, deque[int]] = defaultdict(deque)
        self.held: set[str] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, path: str, *statuses: int) -> None:
        self.statuses[path].extend(statuses)

    def hold_next(self, path: str) -> None:
        """Never answer the next request on `path` (recorded with status None); later ones are answered."""
        self.held.add(path)

    def events(self, path: str, status: int | None = 200) -> list[dict]:
        return [r for r in self.received if r["path"] == path and r["status"] == status]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{path:.*}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = {
            "path": request.path,
            "headers": dict(request.headers),
            "body": body,
            "time": time.monotonic(),
        }
        if request.path == "/hang" or request.path in self.held:
            self.held.discard(request.path)
            self.received.append({**record, "status": None})
            await asyncio.sleep(3600)
        queue = self.statuses[request.path]
        status = queue.popleft() if queue else 200
        self.received.append({**record, "status": status})
        return web.json_response({"ok": status < 400}, status=status)
