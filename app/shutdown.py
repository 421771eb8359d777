"""Safe restarts: SIGTERM (or Ctrl-C) drains live calls before the web server stops.

uvicorn closes every WebSocket the moment it starts shutting down, which would cut
calls off mid-sentence. So the first signal only sets `draining` (new calls get 503),
lets live calls finish for `drain_grace_secs`, ends the rest with a goodbye, and then
hands the signal to uvicorn. A second signal shuts down at once.
"""

import asyncio
import signal
import threading

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
