"""An aiohttp server on its own event loop in a thread, so synchronous tests can drive it."""

import asyncio
import ssl
import threading

from aiohttp import web


class ThreadedServer:
    """Subclasses add their routes in `routes()`; `port` is known once `start()` returns."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self.port = 0
        self.ssl_context = ssl_context
        """Serve TLS with it (for a client that speaks only `https`/`wss`)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self):
        threading.Thread(target=self._serve, daemon=True).start()
        if not self._ready.wait(30):
            raise TimeoutError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self.loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)

    def call(self, coro, timeout: float = 10):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()


class WebSocketFake(ThreadedServer):
    """A provider fake whose clients hold WebSockets open, which a test can cut."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        super().__init__(ssl_context)
        self._sockets: set[web.WebSocketResponse] = set()

    def drop_connections(self) -> int:
        """Close every open socket abruptly; returns how many were closed."""

        async def drop():
            sockets = list(self._sockets)
            for ws in sockets:
                await ws.close(code=1011, message=b"fake outage")
            return len(sockets)

        return self.call(drop())
