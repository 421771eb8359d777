"""Safe restarts: SIGTERM (or Ctrl-C) drains live calls before the web server stops.

uvicorn closes every WebSocket the moment it starts shutting down, which would cut
calls off mid-sentence. So the first signal only sets `draining` (new calls get 503),
lets live calls finish for `drain_grace_secs`, ends the rest with a goodbye, and then
hands the signal to uvicorn. A second signal shuts down at once.
"""

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from loguru import logger

from app.state import AppState

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_drain_on_signals(state: AppState) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in DRAIN_SIGNALS:
        server_handler = signal.getsignal(sig)
        if not callable(server_handler):
            continue

        def on_signal(signum, frame, server_handler=server_handler):
            if state.draining:
                server_handler(signum, frame)
                return
            state.draining = True
            logger.info(f"{signal.Signals(signum).name}: draining {len(state.calls)} live call(s)")
            loop.call_soon_threadsafe(
                loop.create_task, _drain_then(state, server_handler, signum, frame)
            )

        signal.signal(sig, on_signal)


async def _drain_then(state: AppState, server_handler, signum, frame) -> None:
    try:
        await state.calls.drain(state.settings.drain_grace_secs)
    finally:
        server_handler(signum, frame)


def serve_then_exit(serve: Callable[[], object]) -> NoReturn:
    """Run the server, then end the process at once, without waiting for stray threads: a
    SQLite connection that a task cancelled at shutdown never closed keeps its aiosqlite thread
    (not a daemon) alive, and with it the process, until it is killed."""
    code: str | int | None = 0
    try:
        serve()
    except SystemExit as exc:  # SIGTERM's handler after the drain, or a refusal to start
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
