"""Frames the project adds to Pipecat's set."""

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame


@dataclass
class ClientProtocolErrorFrame(SystemFrame):
    """A client sent something the session protocol does not accept.

    Parameters:
        code: Machine-readable error code (e.g. ``invalid_json``).
        message: What was wrong, for a human.
    """

    code: str
    message: str
