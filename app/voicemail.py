"""Answering-machine detection on outbound calls: the one `voicemail` setting (an agent's, a
campaign's, an inline call's) and which one a call follows.

A call with detection on runs Pipecat's `VoicemailDetector` in its pipeline, on every carrier
(`pipelines/voicemail.py`); a Twilio call placed by the server (`POST /v1/calls/outbound`, a
campaign) also asks for Twilio's asynchronous AMD (`app.telephony.twilio.place_call`). The
first machine verdict, from either, ends the call `voicemail` once: the message is left (or the
call hung up) by the detector in the pipeline, and a later verdict changes nothing.
"""

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from app.request_body import REQUEST_BODY
from app.state import AppState
from app.storage import sessions as session_store
from app.storage.models import PhoneCall, Session
from app.telephony import twilio


class Voicemail(BaseModel):
    """What an outbound call does when an answering machine picks up: hang up, or leave
    `message` after the beep. Either way the session ends `voicemail`. The agent's greeting
    waits until a person is heard."""

    model_config = REQUEST_BODY

    detect: bool = Field(default=True, description="false turns detection off")
    action: Literal["hang_up", "leave_message"] = "hang_up"
    message: str | None = Field(
        default=None, min_length=1, max_length=1000, description="Needed by leave_message"
    )

    @model_validator(mode="after")
    def _message_to_leave(self) -> "Voicemail":
        if self.action == "leave_message" and not self.message:
            raise PydanticCustomError("missing_message", "leave_message needs a message")
        return self


def call_setting(*settings: dict | None) -> dict | None:
    """The setting an outbound call follows: the first one given (a campaign's before its
    agent's), if it has detection on; None for no detection."""
    chosen = next((setting for setting in settings if setting is not None), None)
    if chosen is None or not chosen.get("detect", True):
        return None
    return Voicemail.model_validate(chosen).model_dump()


async def end_for_machine(
    state: AppState, db: AsyncSession, call: PhoneCall, answered_by: str
) -> bool:
    """Follow Twilio's answering-machine verdict on a call placed with detection on: a machine
    (or a fax) ends the call `voicemail` with its setting's action; whether it was one. A call
    already ended (the detector in its pipeline was first) is left alone; a call whose stream
    has not connected yet gets the message (or the hang-up) through Twilio's REST API."""
    if not (answered_by.startswith("machine_") or answered_by == "fax"):
        return False
    session = await db.get_one(Session, call.session_id)
    if session.voicemail is None:
        return False
    setting = Voicemail.model_validate(session.voicemail)
    message = setting.message if setting.action == "leave_message" else None
    if session.status == "active":  # the call's pipeline leaves the message, then hangs up
        await state.control.end_call(session.id, "voicemail", message)
    elif session.status == "created":
        if call.call_sid:
            await twilio.end_call(state.settings, call.call_sid, message)
        await session_store.finish(
            db, session.id, status="completed", end_reason="voicemail", error=None
        )
    return True
