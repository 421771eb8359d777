"""`switchboard serve --workers N`: uvicorn's worker supervisor (restarts, health checks,
signals), which accepts every connection itself and hands it to the worker with the fewest open.

On uvicorn's one shared socket, whichever worker wakes first accepts, so a burst of calls lands
on one worker while the others idle (measured: 102 % vs 24 % CPU); a SO_REUSEPORT socket per
worker spreads them by a hash of the caller's address instead, as unevenly as chance (17 and 8
of 25 calls). Here the supervisor accepts, counts what each worker holds and passes the socket
over a Unix socket pair (SCM_RIGHTS); the worker serves it as if it had accepted it.
"""

import asyncio
import functools
import multiprocessing
import socket
import threading
import time
from typing import cast

from uvicorn import Config, Server
from uvicorn.config import logger
from uvicorn.supervisors import multiprocess

TAKEN, OPEN, SERVING = 0, 1, 2
"""A worker's counters, shared with the supervisor: connections it has taken, open now, and
whether it serves yet (1 once its app has started)."""


class CountedConnections(set):
    """uvicorn's set of open connections, which writes to `counts[OPEN]`, as it changes, its
    size plus the connections taken but not yet made (`pending`)."""

    def __init__(self, counts):
        super().__init__()
        self._counts = counts
        self.pending = 0

    def publish(self) -> None:
        self._counts[OPEN] = len(self) + self.pending

    def add(self, connection) -> None:
        super().add(connection)
        self.publish()

    def discard(self, connection) -> None:
        super().discard(connection)
        self.publish()

    def remove(self, connection) -> None:
        super().remove(connection)
        self.publish()


class HandoffServer(Server):
    """A uvicorn server with no listening socket: it serves the connections the supervisor
    passes over `channel`, and counts them in `counts`."""

    def __init__(self, config: Config, channel: socket.socket, counts):
        super().__init__(config)
        self._channel = channel
        self._counts = counts
        self._connections = CountedConnections(counts)
        self.server_state.connections = self._connections

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        self._channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self._channel.fileno(), self._take_connections)
        if not self.should_exit:
            self._counts[SERVING] = 1

    def _take_connections(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self._channel, 1, 1)
            except BlockingIOError:
                return
            if not fds:  # the supervisor has gone: nothing will reach this worker again
                logger.error("the supervisor has gone: shutting down")
                loop.remove_reader(self._channel.fileno())
                self.should_exit = True
                return
            self._connections.pending += 1
            self._connections.publish()
            self._counts[TAKEN] += 1
            loop.create_task(self._serve_connection(socket.socket(fileno=fds[0])))

    async def _serve_connection(self, sock: socket.socket) -> None:
        protocol = functools.partial(
            self.config.http_protocol_class,  # as uvicorn's own `startup` builds it
            config=self.config,  # type: ignore[call-arg]
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        try:
            await asyncio.get_running_loop().connect_accepted_socket(protocol, sock)
        except OSError:  # the caller hung up while the socket was on its way
            sock.close()
        finally:  # made (counted in the set) or gone
            self._connections.pending -= 1
            self._connections.publish()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().remove_reader(self._channel.fileno())
        await super().shutdown(sockets)


class HandoffWorker(multiprocess.Process):
    """A uvicorn worker process fed connections by the supervisor (see `HandoffServer`), which
    ends once its server has shut down (see `serve_then_exit`)."""

    def __init__(self, config: Config, sockets: list[socket.socket]):
        super().__init__(config, sockets)
        self.handoff, self._channel = socket.socketpair()
        self.handoff.setblocking(False)  # a worker that stops reading is skipped, not waited on
        self.counts = multiprocessing.get_context("spawn").Array("q", 3, lock=False)
        self.handed = 0

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "handoff"}  # the supervisor's end

    def start(self) -> None:
        super().start()
        self._channel.close()  # the worker has its own copy: if it dies, handing to it fails

    def join(self) -> None:
        super().join()
        self.handoff.close()  # the worker is gone; a draining one still answers (503) until then

    def load(self) -> tuple[bool, int, int]:
        """A worker still starting (a restarted one loads its models for seconds) comes after
        every serving one; then connections open in the worker plus those on their way to it;
        then, so that ties take turns, how many it has been handed."""
        return (
            not self.counts[SERVING],
            self.counts[OPEN] + self.handed - self.counts[TAKEN],
            self.handed,
        )

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = HandoffServer(self.config, self._channel, self.counts)
        return self._server

    def target(self, sockets=None) -> None:
        from app.shutdown import serve_then_exit

        serve_then_exit(lambda: super(HandoffWorker, self).target([]))


class HandoffSupervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor, plus a thread that accepts on the one listening socket and hands
    each connection to the least-loaded live worker."""

    def __init__(self, config: Config):
        self.listener = config.bind_socket()
        self.listener.listen(config.backlog)
        config.port = self.listener.getsockname()[1]  # port 0: the workers log the real one
        self.stopping = False
        super().__init__(config, sockets=[])

    def run(self) -> None:
        threading.Thread(target=self._hand_off, name="handoff", daemon=True).start()
        try:
            super().run()
        finally:
            self.stopping = True
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept
            self.listener.close()

    def _hand_off(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:
                if self.stopping:
                    return
                logger.error(f"accepting a connection failed ({exc}); trying again in 0.1 s")
                time.sleep(0.1)  # out of descriptors or memory, say: the next accept may work
                continue
            with conn:
                workers = cast(list[HandoffWorker], self.processes)
                for worker in sorted(workers, key=HandoffWorker.load):
                    try:
                        socket.send_fds(worker.handoff, [b"c"], [conn.fileno()])
                    except OSError:
                        continue  # dead, or not reading: the next
                    worker.handed += 1
                    break
                else:
                    logger.warning("no worker could take a connection: closed unanswered")


def run_workers(config: Config) -> None:
    multiprocess.Process = HandoffWorker  # type: ignore[misc]  # what the supervisor starts per worker
    HandoffSupervisor(config).run()
