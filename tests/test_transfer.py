"""Warm transfers where no call is needed to see them: the person's leg against the fake Twilio REST
API and the leg's row on the leg's backend, when nobody answers in time and when the call ends while
the phone rings. (The whole call, answered and not: tests/test_calls_twilio.py.)"""

import asyncio
from types import SimpleNamespace

import pytest

from app.calls.tokens import TokenSigner
from app.settings import Settings
from app.storage import transfers
from app.storage.ids import new_id, utcnow
from app.storage.models import DEFAULT_ACCOUNT_ID, Session
from app.telephony import transfer
from tests.helpers.storage import add_agent
from tests.helpers.twilio import ACCOUNT_SID, AUTH_TOKEN

PERSON, OURS, CALLER_SID = "+14155550142", "+15550003333", "CA" + "3" * 32
NO_LLM: object = SimpleNamespace(name="none", llm=None, analysis=None, tts=None)
"""A pipeline config with no LLM or TTS: the summary is the fixed line, for `<Say>`."""
TOKENS = TokenSigner("transfer-test-secret")


@pytest.fixture
async def call(db):
    """A session row the transfer belongs to."""
    async with db.sessions() as s:
        agent = await add_agent(s, [])
        now = utcnow()
        session = Session(
            id=new_id("ses"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            connection_type="twilio",
            created_at=now,
            expires_at=now,
        )
        s.add(session)
        await s.commit()
    return session.id


def ring(settings, db, session_id: str, heard: list, moved: list, timeout: int = 30):
    return transfer.warm_transfer(
        settings,
        db,
        account_id=DEFAULT_ACCOUNT_ID,
        session_id=session_id,
        call_sid=CALLER_SID,
        caller_id=OURS,
        number=PERSON,
        answer_timeout_secs=timeout,
        config=NO_LLM,  # type: ignore[arg-type]
        conversation="Caller: Put me through to billing, please.",
        voice="joe",
        language="en",
        hold=lambda text: asyncio.sleep(0, heard.append(text)),
        moving=lambda: moved.append(True),
    )


@pytest.fixture
def settings(twilio_rest) -> Settings:
    return Settings(
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=twilio_rest.url,
        public_base_url="https://switchboard.example",
    )


async def wait_for_leg(twilio_rest, placed: int):
    while len(twilio_rest.created_calls()) <= placed:
        await asyncio.sleep(0.02)
    return twilio_rest.created_calls()[placed]


async def test_nobody_answers_in_time_the_leg_is_hung_up_and_a_late_answer_apologised_to(
    db, call, settings, twilio_rest, monkeypatch
):
    monkeypatch.setattr(transfer, "CALLBACK_GRACE_SECS", 0.5)
    heard, moved = [], []
    placed = len(twilio_rest.created_calls())
    error = await ring(settings, db, call, heard, moved, timeout=1)
    assert error == f"the transfer failed: {PERSON} did not answer within 1 s"
    leg = twilio_rest.created_calls()[placed]
    assert (leg.value("To"), leg.value("From"), leg.value("Timeout")) == (PERSON, OURS, "1")
    assert leg.value("Url").startswith("https://switchboard.example/v1/twilio/transfers/xfr_")
    assert twilio_rest.hang_ups(leg.sid)  # the person's phone stops ringing
    assert heard == [transfer.HOLD_MESSAGE] and moved == []
    assert not twilio_rest.twiml_updates(CALLER_SID)  # the caller stays with the agent
    transfer_id = leg.value("Url").split("/")[-2]
    async with db.sessions() as s:
        row = await transfers.get(s, transfer_id)
    assert (row.status, row.call_sid, row.summary) == ("failed", leg.sid, transfer.SUMMARY_FALLBACK)
    late = await transfer.answered(db, TOKENS, transfer_id, "wss://x")
    assert late is not None and "<Hangup" in late and "<Conference" not in late


async def test_the_call_ending_while_the_phone_rings_hangs_up_the_leg(
    db, call, settings, twilio_rest
):
    placed = len(twilio_rest.created_calls())
    task = asyncio.create_task(ring(settings, db, call, [], []))
    leg = await asyncio.wait_for(wait_for_leg(twilio_rest, placed), 10)
    transfer_id = leg.value("Url").split("/")[-2]
    for _ in range(100):  # until the leg's SID is stored: the transfer is waiting
        async with db.sessions() as s:
            if (await transfers.get(s, transfer_id)).call_sid:
                break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert twilio_rest.hang_ups(leg.sid)
    async with db.sessions() as s:
        assert (await transfers.get(s, transfer_id)).status == "cancelled"
    assert "<Conference" not in (await transfer.answered(db, TOKENS, transfer_id, "wss://x") or "")
    # Callbacks for unknown transfers are told so.
    assert await transfer.answered(db, TOKENS, "xfr_unknown", "wss://x") is None
    assert not await transfer.leg_status(db, "xfr_unknown", "no-answer")
