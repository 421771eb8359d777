"""The Campaigns API: an agent calls a list of contacts (see :mod:`app.campaigns`)."""

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from app import campaigns
from app.agents import load_agent
from app.campaigns import Window
from app.casing import CamelCaseAccepted
from app.deps import CallerDep, DbDep, StateDep
from app.errors import ERROR_RESPONSES, APIError, ErrorBody, not_found
from app.request_body import WHOLE_NUMBER
from app.storage import campaigns as store
from app.storage.models import Campaign
from app.telephony import twilio
from app.telephony.numbers import E164Number
from app.telephony.phone_calls import caller_id
from app.voicemail import Voicemail

router = APIRouter(tags=["campaigns"], responses=ERROR_RESPONSES)


class CampaignCreate(CamelCaseAccepted):
    agent_id: str = Field(min_length=1, max_length=40)
    name: str = Field(default="", max_length=200)
    contacts: list[dict[str, Any]] | None = Field(
        default=None,
        description="One object a contact: `phone` (E.164), an optional `timezone` (IANA), and "
        "any other fields, which become the call's {{variables}}. Leave out when uploading a CSV.",
    )
    from_number: E164Number | None = Field(
        default=None,
        validation_alias=AliasChoices("from_number", "from"),
        description="Caller ID: a number of the account (an agent's phone_numbers) or the server's "
        "TWILIO_FROM_NUMBER; defaults to the agent's first phone number, then TWILIO_FROM_NUMBER",
    )
    calls_per_minute: float = Field(gt=0, le=600, description="Calls started per minute at most")
    max_concurrent: Annotated[int, Field(ge=1), WHOLE_NUMBER] = Field(
        description="Calls under way at once, at most the account's call cap"
    )
    window: Window | None = Field(
        default=None, description="When contacts may be called; any time if omitted"
    )
    voicemail: Voicemail | None = Field(
        default=None,
        description="Detect answering machines and hang up or leave a message; overrides the "
        "agent's `voicemail` (`{detect: false}` turns it off); the agent's if omitted",
    )
    max_attempts: Annotated[int, Field(ge=1, le=10), WHOLE_NUMBER] = Field(
        default=1, description="Attempts per contact, retries included"
    )
    retry_after_minutes: float = Field(
        default=60,
        ge=0,
        le=7 * 24 * 60,
        description="Wait before retrying a no-answer, busy, failed or voicemail attempt",
    )


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    name: str
    status: str = Field(description="running, paused, completed, cancelled or stopped")
    stop_reason: str | None = Field(
        description="Why it stopped: `agent_deleted`, or `scheduling_failed` (its scheduling step failed every attempt)"
    )
    from_number: str
    calls_per_minute: float
    max_concurrent: int
    window: Window | None
    voicemail: Voicemail | None
    max_attempts: int
    retry_after_minutes: float
    created_at: datetime
    counts: dict[str, int] = Field(description="Contacts per status")
    total: int
    progress: float = Field(description="Share of contacts with a final outcome (0–1)")


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    row: int = Field(description="Its place in the list (1 = first)")
    phone: str
    timezone: str
    variables: dict[str, str]
    status: str = Field(
        description="pending, calling, dialing, or an outcome: completed, no_answer, busy, "
        "failed, voicemail, cancelled"
    )
    attempts: int
    last_outcome: str | None
    last_error: str | None
    next_attempt_at: datetime
    session_ids: list[str]


class ContactList(BaseModel):
    items: list[ContactOut]
    total: int
    limit: int
    offset: int


CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                k: v
                for k, v in CampaignCreate.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                ).items()
                if k != "$defs"
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["contacts", "campaign"],
                "properties": {
                    "contacts": {
                        "type": "string",
                        "format": "binary",
                        "description": "CSV, UTF-8: a header row with `phone` (and optionally "
                        "`timezone`); every other column becomes the call's {{variables}}",
                    },
                    "campaign": {
                        "type": "string",
                        "description": "JSON: the campaign's other fields (as the JSON body, without `contacts`)",
                    },
                },
            }
        },
    },
}


async def _body(request: Request) -> tuple[CampaignCreate, list[dict[str, Any]]]:
    """The campaign and its contact rows, from a JSON body or a CSV upload."""
    content_type = request.headers.get("content-type", "")
    rows: Any
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload, fields = form.get("contacts"), form.get("campaign")
        if not isinstance(upload, UploadFile) or not isinstance(fields, str):
            raise APIError(
                422,
                "validation_error",
                "a multipart upload needs a `contacts` CSV file and a `campaign` JSON field",
            )
        rows = campaigns.parse_csv(await upload.read())
        data = _json(fields)
        if isinstance(data, dict) and "contacts" in data:
            raise APIError(
                422, "validation_error", "campaign: give contacts in the CSV file, not here"
            )
    elif content_type.startswith("application/json"):
        data = _json((await request.body()).decode("utf-8", errors="replace"))
        rows = data.get("contacts") if isinstance(data, dict) else None
    else:
        raise APIError(
            415,
            "unsupported_media_type",
            "send application/json, or multipart/form-data with a CSV file",
        )
    try:
        body = CampaignCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    if rows is None:
        raise APIError(422, "invalid_contacts", "contacts: a list of contacts is required")
    return body, rows


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(422, "validation_error", f"invalid JSON: {exc}") from None


async def _load(db, caller, campaign_id: str) -> Campaign:
    campaign = await store.get_campaign(db, caller.account_id, campaign_id)
    if campaign is None:
        raise not_found("campaign", campaign_id)
    return campaign


async def campaign_out(db, campaign: Campaign) -> CampaignOut:
    counts = await store.status_counts(db, campaign.id)
    total = sum(counts.values())
    waiting = sum(counts.get(s, 0) for s in ("pending", *store.IN_FLIGHT))
    return CampaignOut.model_validate(
        {
            **{k: getattr(campaign, k) for k in CampaignOut.model_fields if hasattr(campaign, k)},
            "counts": counts,
            "total": total,
            "progress": round((total - waiting) / total, 4) if total else 1.0,
        }
    )


@router.post(
    "/v1/campaigns",
    status_code=201,
    response_model=CampaignOut,
    summary="Start a campaign: the agent calls each contact",
    openapi_extra={"requestBody": CREATE_BODY},
    responses={
        403: {"model": ErrorBody, "description": "`from` is not a number of the caller's account"},
        415: {"model": ErrorBody, "description": "Neither JSON nor multipart/form-data"},
    },
)
async def create_campaign(
    request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> CampaignOut:
    """Contacts come as a JSON array or a CSV upload. A 422 names every bad row and field: numbers
    that aren't E.164 or this server may not dial, unknown timezones, variables the agent's
    {{placeholders}} need, an empty or oversized list, a window that never opens, or
    `max_concurrent` over the account's cap."""
    body, rows = await _body(request)
    twilio.require_credentials(state.settings)
    agent = await load_agent(db, caller, body.agent_id)
    from_number = await caller_id(state, db, agent, body.from_number)
    default_timezone = body.window.timezone if body.window else "UTC"
    contacts = campaigns.check_contacts(state.settings, agent, rows, default_timezone)
    campaign = await campaigns.create(
        state,
        db,
        agent,
        name=body.name,
        from_number=from_number,
        calls_per_minute=body.calls_per_minute,
        max_concurrent=body.max_concurrent,
        window=body.window,
        voicemail=body.voicemail,
        max_attempts=body.max_attempts,
        retry_after_minutes=body.retry_after_minutes,
        contacts=contacts,
    )
    return await campaign_out(db, campaign)


@router.get("/v1/campaigns", response_model=list[CampaignOut], summary="List campaigns")
async def list_campaigns(db: DbDep, caller: CallerDep) -> list[CampaignOut]:
    return [await campaign_out(db, c) for c in await store.list_campaigns(db, caller.account_id)]


@router.get(
    "/v1/campaigns/{campaign_id}",
    response_model=CampaignOut,
    summary="A campaign, its contacts per status and its progress",
)
async def get_campaign(campaign_id: str, db: DbDep, caller: CallerDep) -> CampaignOut:
    return await campaign_out(db, await _load(db, caller, campaign_id))


@router.get(
    "/v1/campaigns/{campaign_id}/contacts",
    response_model=ContactList,
    summary="A campaign's contacts: attempts, last outcome, sessions",
)
async def list_contacts(
    campaign_id: str,
    db: DbDep,
    caller: CallerDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ContactList:
    campaign = await _load(db, caller, campaign_id)
    items, total = await store.list_contacts(
        db, campaign.id, status=status, limit=limit, offset=offset
    )
    return ContactList(
        items=[ContactOut.model_validate(c) for c in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post(
    "/v1/campaigns/{campaign_id}/pause",
    response_model=CampaignOut,
    summary="Pause: no new calls start (calls under way go on)",
)
async def pause_campaign(campaign_id: str, db: DbDep, caller: CallerDep) -> CampaignOut:
    campaign = await _load(db, caller, campaign_id)
    await campaigns.pause(db, campaign)
    return await campaign_out(db, campaign)


@router.post("/v1/campaigns/{campaign_id}/resume", response_model=CampaignOut, summary="Resume")
async def resume_campaign(
    campaign_id: str, state: StateDep, db: DbDep, caller: CallerDep
) -> CampaignOut:
    campaign = await _load(db, caller, campaign_id)
    await campaigns.resume(state, db, campaign)
    return await campaign_out(db, campaign)


@router.post(
    "/v1/campaigns/{campaign_id}/cancel",
    response_model=CampaignOut,
    summary="Cancel: contacts not yet called are cancelled (calls under way go on)",
)
async def cancel_campaign(campaign_id: str, db: DbDep, caller: CallerDep) -> CampaignOut:
    campaign = await _load(db, caller, campaign_id)
    await campaigns.cancel(db, campaign)
    return await campaign_out(db, campaign)


@router.get(
    "/v1/campaigns/{campaign_id}/export.csv",
    response_class=Response,
    summary="Every contact's outcome, variables and analysis fields, as CSV",
    responses={200: {"content": {"text/csv": {}}, "description": "One row a contact"}},
)
async def export_campaign(campaign_id: str, db: DbDep, caller: CallerDep) -> Response:
    campaign = await _load(db, caller, campaign_id)
    return Response(
        await campaigns.export_csv(db, campaign),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{campaign.id}.csv"'},
    )
