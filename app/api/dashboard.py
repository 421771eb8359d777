"""The dashboard: server-rendered pages at `/` for the overview (charts drawn in the page from
`/v1/analytics`), live calls, agents, browser calls and call logs.

Log-in takes an API key and starts a server-side log-in whose random id is kept in an
HttpOnly, SameSite=Strict cookie (`Secure` when the public base URL is https); every page
and action refuses without it (pages redirect to `/login`, actions answer 401). Logging out
or revoking the key ends it. Failed log-ins are rate-limited per client IP (429). Forms
from another origin are refused as well. Templates autoescape everything they render.
"""

import json
from datetime import UTC, date, datetime, time, timedelta
from math import ceil
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from app import agents, flows
from app.analytics import Bucket, Window
from app.api import evals as evals_api
from app.api.sessions import SessionStatus
from app.deps import LOGIN_COOKIE, Caller, DbDep, StateDep, authenticate, login_caller, same_origin
from app.errors import APIError, not_found
from app.evals import background as eval_background
from app.recordings import recording_response
from app.storage import agents as agent_store
from app.storage import analysis as analysis_store
from app.storage import analytics as analytics_store
from app.storage import dashboard as dashboard_store
from app.storage import evals as eval_store
from app.storage import sessions as session_store
from app.storage.ids import utcnow
from app.urls import public_base_url
from pipelines.config import PipelineConfig

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PAGE_SIZE = 20
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=WEB_DIR / "templates")
static_files = StaticFiles(directory=WEB_DIR / "static")


def _format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _format_duration(secs: float | None) -> str:
    if secs is None:
        return "—"
    minutes, seconds = divmod(round(secs), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


templates.env.filters["time"] = _format_time
templates.env.filters["duration"] = _format_duration


# --- log-in ------------------------------------------------------------------------------


async def page_caller(request: Request, state: StateDep, db: DbDep) -> Caller:
    """Dashboard pages and actions: a page without a valid log-in redirects to `/login`."""
    try:
        return await login_caller(request, state, db)
    except APIError as exc:
        if exc.status == 401 and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = f"/login?next={quote(target)}"
            raise APIError(
                303, "login_required", exc.body.message, headers={"Location": login}
            ) from None
        raise


PageCallerDep = Annotated[Caller, Depends(page_caller)]


def _render(request: Request, template: str, status_code: int = 200, **context) -> Response:
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _local_path(target: str | None) -> str:
    """Where to go after log-in: a path on this server, never another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form body as a dict of its first values."""
    if (
        request.headers.get("content-type", "").split(";")[0].strip()
        != "application/x-www-form-urlencoded"
    ):
        raise APIError(
            415,
            "unsupported_media_type",
            "dashboard forms are sent as application/x-www-form-urlencoded",
        )
    fields = parse_qs(
        (await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True
    )
    return {name: values[0] for name, values in fields.items()}


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _render(request, "login.html", next=_local_path(next))


@router.post("/login")
async def login(request: Request, state: StateDep, db: DbDep) -> Response:
    form = await _form(request)
    target = _local_path(form.get("next"))
    key = form.get("api_key", "").strip()
    if not same_origin(request):
        raise APIError(403, "cross_origin", "log in from this server's own page")
    # Every attempt takes a slot first (so a parallel burst can't slip past the limit) and a
    # successful one gives it back: only failures count.
    client_ip = request.client.host if request.client else "unknown"
    retry_after = await state.login_limiter.retry_after(client_ip)
    if retry_after is not None:
        error = f"Too many failed log-ins from this address; try again in {retry_after}s."
        response = _render(request, "login.html", 429, next=target, error=error)
        response.headers["Retry-After"] = str(retry_after)
        return response
    caller = await authenticate(db, key)
    if caller is None:
        return _render(request, "login.html", 401, next=target, error="That API key is not valid.")
    await state.login_limiter.refund(client_ip)
    session_id = await dashboard_store.start_login(
        db, caller.key_id, caller.account_id, state.settings.dashboard_session_secs
    )
    public_base = public_base_url(state.settings, request)
    response = _redirect(target)
    response.set_cookie(
        LOGIN_COOKIE,
        session_id,
        max_age=state.settings.dashboard_session_secs,
        httponly=True,
        samesite="strict",
        secure=public_base.startswith("https://"),
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, db: DbDep) -> Response:
    if not same_origin(request):
        raise APIError(403, "cross_origin", "log out from this server's own page")
    if session_id := request.cookies.get(LOGIN_COOKIE):
        await dashboard_store.end_login(db, session_id)
    response = _redirect("/login")
    response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- agents ------------------------------------------------------------------------------


PageNumber = Annotated[int, Query(ge=1, le=50_000)]


def _pager(path: str, filters: dict[str, str], page: int, total: int) -> dict:
    """Template values for the newer/older links of a paginated list."""
    pages = max(ceil(total / PAGE_SIZE), 1)
    return {
        "page": page,
        "pages": pages,
        "total": total,
        "newer_url": f"{path}?{urlencode(filters | {'page': page - 1})}" if page > 1 else None,
        "older_url": f"{path}?{urlencode(filters | {'page': page + 1})}" if page < pages else None,
    }


@router.get("/agents")
async def agents_page(
    request: Request, db: DbDep, caller: PageCallerDep, page: PageNumber = 1
) -> Response:
    items, total = await agent_store.list_agents(
        db, caller.account_id, status=None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    return _render(request, "agents.html", agents=items, **_pager("/agents", {}, page, total))


def _agent_form_context(
    state, values: dict, errors: list[str] | None = None, flow: dict | None = None
) -> dict:
    """The agent form's context; `flow`: the agent's saved flow, drawn below the field."""
    loaded = state.catalog.load_all()
    pipelines = list(loaded)
    voices = sorted(
        {voice for c in loaded.values() if isinstance(c, PipelineConfig) for voice in c.voices}
    )
    return {
        "values": values,
        "errors": errors or [],
        "pipelines": pipelines,
        "voices": voices,
        "flow_graph": flows.flow_svg(flow) if flow else None,
        "flow_errors": [],
    }


def _refused(state, form: dict, exc: APIError, flow: dict | None) -> dict:
    """The form's context after the API refused it: a flow's problems go by the flow field."""
    context = _agent_form_context(state, form, [exc.body.message], flow)
    if exc.body.code == "invalid_flow":
        context["errors"] = ["flow: the flow has problems (below)"]
        context["flow_errors"] = [flows.describe(p) for p in (exc.body.details or {})["problems"]]
    return context


def _agent_fields(form: dict[str, str]) -> dict:
    """The agent fields a dashboard form sent, in the API's shape (validated by its models)."""
    fields: dict[str, Any] = {
        name: form.get(name, "").strip()
        for name in ("name", "voice_id", "system_prompt", "language", "pipeline")
    }
    fields["greeting"] = form.get("greeting", "").strip() or None
    fields["max_turns"] = form.get("max_turns", "").strip() or "50"
    fields["max_duration"] = form.get("max_duration", "").strip() or "3000"
    fields["first_speaker"] = form.get("first_speaker") or "agent"
    fields["interruptible"] = "interruptible" in form  # an unticked checkbox is not sent
    fields["recording_enabled"] = "recording_enabled" in form
    action = form.get("voicemail_action", "")
    message = form.get("voicemail_message", "").strip() or None
    fields["voicemail"] = {"action": action, "message": message} if action else None
    tools = form.get("tools", "").strip()
    try:
        fields["tools"] = json.loads(tools) if tools else []
    except ValueError as exc:
        raise _FormError([f"tools: not valid JSON ({exc})"]) from None
    flow = form.get("flow", "").strip()
    try:
        fields["flow"] = json.loads(flow) if flow else None
    except ValueError as exc:
        raise _FormError([f"flow: not valid JSON ({exc})"]) from None
    return fields


class _FormError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


Model = TypeVar("Model", bound=BaseModel)


def _validate(model: type[Model], fields: dict) -> Model:
    """The API's model of the form's fields; a form's values are strings, so "50" is 50."""
    try:
        return model.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise _FormError(
            [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
        ) from None


def _tools_without_secrets(tools: list[dict]) -> list[dict]:
    """The tools as the form shows them: no secrets (saved without one, a tool keeps its own)."""
    return [{key: value for key, value in tool.items() if key != "secret"} for tool in tools]


def _form_values(agent=None, form: dict[str, str] | None = None) -> dict:
    if form is not None:
        return form
    if agent is None:
        return {
            "language": "en",
            "max_turns": "50",
            "max_duration": "3000",
            "first_speaker": "agent",
            "interruptible": "on",
            "recording_enabled": "on",
            "tools": "",
            "flow": "",
            "voicemail_action": "",
            "voicemail_message": "",
        }
    values = {
        "name": agent.name,
        "voice_id": agent.voice_id,
        "system_prompt": agent.system_prompt,
        "language": agent.language,
        "pipeline": agent.pipeline,
        "greeting": agent.greeting or "",
        "max_turns": str(agent.max_turns),
        "max_duration": str(agent.max_duration),
        "first_speaker": agent.first_speaker,
        "tools": json.dumps(_tools_without_secrets(agent.tools), indent=2) if agent.tools else "",
        "flow": json.dumps(agent.flow, indent=2) if agent.flow else "",
        "voicemail_action": agent.voicemail["action"]
        if agent.voicemail and agent.voicemail["detect"]
        else "",
        "voicemail_message": (agent.voicemail or {}).get("message") or "",
    }
    return values | {
        name: "on" for name in ("interruptible", "recording_enabled") if getattr(agent, name)
    }


@router.get("/agents/new")
async def new_agent_page(request: Request, state: StateDep, caller: PageCallerDep) -> Response:
    values = _form_values() | {"pipeline": state.settings.default_pipeline}
    return _render(request, "agent_form.html", agent=None, **_agent_form_context(state, values))


@router.post("/agents/new")
async def create_agent(
    request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    form = await _form(request)
    try:
        body = _validate(agents.AgentCreate, _agent_fields(form))
        agent = await agents.create_agent(
            db, state.catalog, state.settings.default_pipeline, caller.account_id, body
        )
    except _FormError as exc:
        return _render(
            request,
            "agent_form.html",
            422,
            agent=None,
            **_agent_form_context(state, form, exc.errors),
        )
    except APIError as exc:
        return _render(
            request, "agent_form.html", exc.status, agent=None, **_refused(state, form, exc, None)
        )
    return _redirect(f"/agents/{agent.id}")


@router.get("/agents/{agent_id}")
async def agent_page(
    agent_id: str, request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    return _render(
        request,
        "agent_form.html",
        agent=agent,
        **_agent_form_context(state, _form_values(agent), flow=agent.flow),
    )


@router.post("/agents/{agent_id}")
async def update_agent(
    agent_id: str, request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    form = await _form(request)
    try:
        body = _validate(agents.AgentUpdate, _agent_fields(form))
        await agents.update_agent(db, state.catalog, agent, body)
    except _FormError as exc:
        return _render(
            request,
            "agent_form.html",
            422,
            agent=agent,
            **_agent_form_context(state, form, exc.errors),
        )
    except APIError as exc:
        return _render(
            request,
            "agent_form.html",
            exc.status,
            agent=agent,
            **_refused(state, form, exc, agent.flow),
        )
    return _redirect(f"/agents/{agent_id}")


@router.post("/agents/{agent_id}/pause")
async def pause_agent(agent_id: str, state: StateDep, db: DbDep, caller: PageCallerDep) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    await agents.update_agent(
        db, state.catalog, agent, agents.AgentUpdate.model_validate({"status": "paused"})
    )
    return _redirect("/agents")


@router.post("/agents/{agent_id}/resume")
async def resume_agent(
    agent_id: str, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    await agents.update_agent(
        db, state.catalog, agent, agents.AgentUpdate.model_validate({"status": "active"})
    )
    return _redirect("/agents")


@router.post("/agents/{agent_id}/delete")
async def delete_agent(
    agent_id: str, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    await agents.delete_agent(db, state.control, await agents.load_agent(db, caller, agent_id))
    return _redirect("/agents")


@router.get("/agents/{agent_id}/preview")
async def preview_page(
    agent_id: str, request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    ice_servers = [s.model_dump(exclude_none=True) for s in state.settings.webrtc_ice_servers]
    return _render(request, "call.html", agent=agent, ice_servers=ice_servers)


# --- evals ------------------------------------------------------------------------------

EVAL_RUNS_SHOWN = 10


async def _evals_page(
    request: Request,
    db,
    caller: Caller,
    agent,
    run_id: str | None,
    status_code: int = 200,
    errors: list[str] | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    """An agent's eval runs: the chosen one (the newest by default) with each scenario's result
    next to the run before it, failures with their transcript and recording."""
    runs = await eval_store.list_runs(db, caller.account_id, agent.id, EVAL_RUNS_SHOWN)
    chosen = runs[0] if runs else None
    if run_id:
        chosen = await eval_store.get_run(db, caller.account_id, run_id)
        if chosen is None or chosen.agent_id != agent.id:
            raise not_found("eval", run_id)
    earlier = [r for r in runs if chosen and r.created_at < chosen.created_at]
    previous = {r["name"]: r for r in (earlier[0].results if earlier else [])}
    return _render(
        request,
        "evals.html",
        status_code,
        agent=agent,
        runs=[evals_api.run_out(r) for r in runs],
        run=evals_api.run_out(chosen) if chosen else None,
        previous=previous,
        errors=errors or [],
        form=form or {"scenarios": chosen.documents[0] if chosen else "", "transport": "ws"},
    )


@router.get("/agents/{agent_id}/evals")
async def evals_page(
    agent_id: str,
    request: Request,
    db: DbDep,
    caller: PageCallerDep,
    run: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    return await _evals_page(request, db, caller, agent, run)


@router.post("/agents/{agent_id}/evals")
async def start_eval_run(
    agent_id: str, request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    agent = await agents.load_agent(db, caller, agent_id)
    form = await _form(request)
    try:
        repeat = int(form.get("repeat") or 1)
        if not 1 <= repeat <= 10:
            raise ValueError
    except ValueError:
        return await _evals_page(
            request, db, caller, agent, None, 422, ["repeat: a whole number from 1 to 10"], form
        )
    transport = "twilio" if form.get("transport") == "twilio" else "ws"
    try:
        run = await eval_background.start(
            state, db, agent, [form.get("scenarios", "")], None, transport, "text" in form, repeat
        )
    except APIError as exc:
        return await _evals_page(
            request, db, caller, agent, None, exc.status, [exc.body.message], form
        )
    return _redirect(f"/agents/{agent_id}/evals?run={run.id}")


# --- overview and live calls ------------------------------------------------------------

FAILURES_SHOWN = 10
HANG_UP_REASON = "hung_up"


def _overview_window(filters: dict[str, str], now: datetime) -> Window:
    """The analytics window of the overview's filter form: whole UTC days, `to` included."""
    first, last = date.fromisoformat(filters["from"]), date.fromisoformat(filters["to"])
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    bucket: Bucket = "hour" if filters["bucket"] == "hour" else "day"
    return Window.parse(start, end, bucket, filters["agent_id"], now)


@router.get("/")
async def overview_page(request: Request, db: DbDep, caller: PageCallerDep) -> Response:
    now = utcnow()
    today = now.date()
    defaults = {
        "from": str(today - timedelta(days=6)),
        "to": str(today),
        "agent_id": "",
        "bucket": "day",
    }
    filters = {name: request.query_params.get(name) or value for name, value in defaults.items()}
    agent_names = await dashboard_store.agent_names(db, caller.account_id)
    error = None
    if filters["agent_id"] and filters["agent_id"] not in agent_names:
        error = "Choose one of your agents."
    else:
        try:
            window = _overview_window(filters, now)
        except ValueError:
            error = "Dates are written YYYY-MM-DD."
        except APIError as exc:
            error = exc.body.message
    if error:
        filters = defaults
        window = _overview_window(defaults, now)
    args = (db, caller.account_id, window.start, window.end, window.agent_id, FAILURES_SHOWN)
    return _render(
        request,
        "overview.html",
        filters=filters,
        error=error,
        window=window,
        agent_names=agent_names,
        live_calls=len(await analytics_store.live_calls(db, caller.account_id)),
        failed_calls=await analytics_store.failed_calls(*args),
        failed_webhooks=await analytics_store.failed_webhooks(*args),
    )


@router.get("/live")
async def live_page(request: Request, db: DbDep, caller: PageCallerDep) -> Response:
    calls = await analytics_store.live_calls(db, caller.account_id)
    return _render(
        request,
        "live.html",
        calls=calls,
        transcripts={call.id: await session_store.transcript(db, call.id) for call in calls},
        agent_names=await dashboard_store.agent_names(db, caller.account_id),
        now=utcnow(),
    )


@router.post("/live/{session_id}/hangup")
async def hang_up(session_id: str, state: StateDep, db: DbDep, caller: PageCallerDep) -> Response:
    """End a live call of the account, on whichever node runs it (one already over: nothing to do)."""
    session = await session_store.get_session(db, caller.account_id, session_id)
    if session is None:
        raise not_found("session", session_id)
    if session.status == "active":
        await state.control.end_call(session.id, HANG_UP_REASON)
    return _redirect("/live")


# --- call logs ---------------------------------------------------------------------------

WAVEFORM_MAX_BYTES = 40_000_000
"""The session page draws the waveform of a stored recording up to this size (the browser
loads it whole: about 10 minutes of 16 kHz stereo)."""
STATUSES = get_args(SessionStatus)


@router.get("/calls")
async def calls_page(
    request: Request,
    db: DbDep,
    caller: PageCallerDep,
    agent_id: str | None = None,
    status: str | None = None,
    page: PageNumber = 1,
) -> Response:
    agent_id = agent_id or None
    status = status if status in STATUSES else None
    sessions, total = await session_store.list_sessions(
        db,
        caller.account_id,
        agent_id=agent_id,
        status=status,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    agent_names = await dashboard_store.agent_names(db, caller.account_id)
    filters = {k: v for k, v in (("agent_id", agent_id), ("status", status)) if v}
    return _render(
        request,
        "calls.html",
        sessions=sessions,
        agent_names=agent_names,
        statuses=STATUSES,
        filters=filters,
        **_pager("/calls", filters, page, total),
    )


@router.get("/calls/{session_id}")
async def session_page(
    session_id: str, request: Request, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    session = await session_store.get_session(db, caller.account_id, session_id)
    if session is None:
        raise not_found("session", session_id)
    agent = (
        await agent_store.get_agent(db, caller.account_id, session.agent_id)
        if session.agent_id
        else None
    )
    transcript = await session_store.transcript(db, session.id)
    analysis = await analysis_store.get_analysis(db, caller.account_id, session.id)
    cost = (await analysis_store.load_costs(db, [session.id])).get(session.id)
    return _render(
        request,
        "session.html",
        session=session,
        agent=agent,
        transcript=transcript,
        analysis=analysis,
        cost=cost,
        has_recording=session.recording_status in ("recording", "available"),
        waveform=session.recording_status == "available"
        and (session.recording_bytes or 0) <= WAVEFORM_MAX_BYTES,
        flow_graph=flows.flow_svg(session.flow_state["flow"], session.flow_state["path"])
        if session.flow_state
        else None,
    )


@router.get("/calls/{session_id}/recording")
async def session_recording(
    session_id: str, state: StateDep, db: DbDep, caller: PageCallerDep
) -> Response:
    """The recording for the session page's player (the API's route wants the key header)."""
    session = await session_store.get_session(db, caller.account_id, session_id)
    if session is None:
        raise APIError(404, "recording_not_found", f"session '{session_id}' has no recording")
    return await recording_response(state.settings, session, state.node.id, SECURITY_HEADERS)
