"""`switchboard serve --workers N`: uvicorn's worker supervisor (restarts, health checks,
signals), each worker listening on its own SO_REUSEPORT socket.

On uvicorn's one shared socket, whichever worker wakes first accepts, so a burst of calls lands
on one worker while the others idle (measured: 102 % vs 24 % CPU). With a socket per worker the
kernel spreads new connections over them by a hash of the client's address and port.
"""

import socket
import sys

from uvicorn import Config
from uvicorn.config import logger
from uvicorn.server import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with SO_REUSEPORT (the worker exits as a startup failure,
    which stops the supervisor, if the port is taken)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)
    return sock


class ReusePortWorker(multiprocess.Process):
    """A uvicorn worker process that binds its own listening socket, and ends once its server
    has shut down (see `serve_then_exit`)."""

    def target(self, sockets=None) -> None:
        from app.shutdown import serve_then_exit

        serve_then_exit(
            lambda: super(ReusePortWorker, self).target(
                [reuse_port_socket(self.config.host, self.config.port)]
            )
        )


def run_workers(config: Config) -> None:
    multiprocess.Process = ReusePortWorker  # type: ignore[misc]  # what the supervisor starts per worker
    multiprocess.Multiprocess(config, sockets=[]).run()
