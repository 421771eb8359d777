"""Browser calls over WebRTC: `POST /v1/agents/{id}/webrtc/offer`, and `PATCH` on the same
path for trickled ICE candidates.

A WebRTC call is a session like any other (connection type `webrtc`): the same pipeline,
transcript and lifecycle. The session protocol's JSON events travel over the data channel
the browser opens, both ways. Pipecat's SmallWebRTC transport (aiortc) carries the media.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from loguru import logger
from pipecat.frames.frames import Frame, InputTransportMessageFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import IceServer, SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from app.agents import load_agent
from app.calls import admission
from app.calls.protocol import check_client_event
from app.calls.session import CallSession
from app.deps import DbDep, KeyOrLoginCallerDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES, APIError
from app.request_body import REQUEST_BODY, WHOLE_NUMBER
from app.state import AppState
from app.storage import sessions as session_store
from app.storage.models import Agent, Session
from pipelines.registry import build_processors
from processors.frames import ClientProtocolErrorFrame

router = APIRouter(tags=["webrtc"], responses=ERROR_RESPONSES)

MAX_SDP_CHARS = 100_000


class WebRTCOffer(BaseModel):
    model_config = REQUEST_BODY

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS, description="The browser's SDP offer")
    type: Literal["offer"]


class WebRTCAnswer(BaseModel):
    sdp: str
    type: Literal["answer"]
    pc_id: str = Field(description="Names the peer connection in ICE candidate `PATCH`es")
    session_id: str


class IceCandidateIn(BaseModel):
    """One candidate as the browser's `RTCIceCandidate.toJSON()` gives it (snake_case also accepted)."""

    model_config = REQUEST_BODY | ConfigDict(extra="ignore")  # toJSON() adds usernameFragment

    candidate: str = Field(
        max_length=2000, description="An empty string marks the end of candidates"
    )
    sdp_mid: str | None = Field(
        default=None, max_length=64, validation_alias=AliasChoices("sdp_mid", "sdpMid")
    )
    sdp_mline_index: Annotated[int | None, Field(ge=0, le=64), WHOLE_NUMBER] = Field(
        default=None, validation_alias=AliasChoices("sdp_mline_index", "sdpMLineIndex")
    )

    @model_validator(mode="after")
    def _names_a_media_line(self):
        if self.sdp_mid is None and self.sdp_mline_index is None:
            raise ValueError("a candidate needs sdpMid or sdpMLineIndex")
        return self


class IceCandidates(BaseModel):
    model_config = REQUEST_BODY

    pc_id: str = Field(max_length=200)
    candidates: list[IceCandidateIn] = Field(min_length=1, max_length=100)


class DataChannelEventChecker(FrameProcessor):
    """Checks the browser's data-channel messages as the WebSocket serializer checks
    text frames, so the session protocol's receiver only sees valid client events."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM:
            event = check_client_event(json.dumps(frame.message))
            if isinstance(event, ClientProtocolErrorFrame):
                frame = event
        await self.push_frame(frame, direction)


@dataclass
class _Peer:
    account_id: str
    agent_id: str


class WebRTCPeers:
    """This process's peer connections (Pipecat's request handler) and whose they are."""

    def __init__(self, ice_servers: list[IceServer]):
        self.handler = SmallWebRTCRequestHandler(ice_servers=ice_servers)
        self._peers: dict[str, _Peer] = {}
        self._calls: set[asyncio.Task] = set()

    def check_owner(self, pc_id: str, account_id: str, agent_id: str) -> None:
        """404 unless `pc_id` is a live call of this account's agent."""
        if self._peers.get(pc_id) != _Peer(account_id, agent_id):
            raise APIError(
                404, "peer_connection_not_found", f"no live WebRTC call '{pc_id}' for this agent"
            )

    def start_call(self, state: AppState, session: Session, agent: Agent):
        """The callback that runs the call once Pipecat has made the peer connection."""

        async def on_connection(connection: SmallWebRTCConnection) -> None:
            config = state.catalog.get(agent.pipeline)
            processors = build_processors(config)
            transport = SmallWebRTCTransport(
                connection,
                TransportParams(
                    audio_in_enabled=True,
                    audio_out_enabled=True,
                    **processors.transport_params(),
                ),
            )
            call = CallSession(
                state,
                session=session,
                agent=agent,
                config=config,
                processors=processors,
                transport=transport,
                session_protocol=True,
                audio_out_sample_rate=config.audio_out_sample_rate,
                extra_input=[DataChannelEventChecker()],
            )
            pc_id = connection.pc_id
            self._peers[pc_id] = _Peer(session.account_id, agent.id)
            task = asyncio.create_task(call.run(), name=f"webrtc-{session.id}")
            self._calls.add(task)

            def forget(_task: asyncio.Task) -> None:
                self._calls.discard(task)
                self._peers.pop(pc_id, None)
                if not task.cancelled() and task.exception() is not None:
                    logger.opt(exception=task.exception()).error(
                        f"session {session.id}: WebRTC call failed"
                    )

            task.add_done_callback(forget)

        return on_connection


def _peers(request: Request) -> WebRTCPeers:
    """The process's peer connections, made on first use with the configured ICE servers."""
    app_state = request.app.state
    if not hasattr(app_state, "webrtc_peers"):
        settings = app_state.switchboard.settings
        app_state.webrtc_peers = WebRTCPeers(
            [IceServer(**s.model_dump()) for s in settings.webrtc_ice_servers]
        )
    return app_state.webrtc_peers


PeersDep = Annotated[WebRTCPeers, Depends(_peers)]


@router.post(
    "/v1/agents/{agent_id}/webrtc/offer",
    response_model=WebRTCAnswer,
    summary="Start a browser call (SDP offer → answer)",
    responses=DRAINING_RESPONSES,
)
async def webrtc_offer(
    agent_id: str,
    body: WebRTCOffer,
    state: StateDep,
    db: DbDep,
    caller: KeyOrLoginCallerDep,
    peers: PeersDep,
) -> WebRTCAnswer:
    """Send the browser's offer; the answer starts the call. Authenticate with `X-API-Key`
    or the dashboard's log-in cookie."""
    lines = body.sdp.splitlines()
    if not lines or lines[0] != "v=0" or not any(line.startswith("m=audio ") for line in lines):
        raise APIError(
            400, "invalid_offer", "the offer must be SDP (starting v=0) with an audio media section"
        )
    agent = await load_agent(db, caller, agent_id)
    session = await admission.start_session(state, db, agent, connection_type="webrtc", live=True)
    request = SmallWebRTCRequest(sdp=body.sdp, type=body.type)
    try:
        answer = await peers.handler.handle_web_request(
            request, peers.start_call(state, session, agent)
        )
    except Exception as exc:  # aiortc rejects an unusable SDP with assorted exception types
        message = f"the SDP offer could not be used: {exc}"
        logger.info(f"session {session.id}: {message} ({type(exc).__name__})")
        state.calls.release(session.id)
        await session_store.finish(
            db, session.id, status="failed", end_reason="error", error=message
        )
        raise APIError(400, "invalid_offer", message) from None
    assert answer is not None  # Pipecat's handler returns an answer or raises
    return WebRTCAnswer(
        sdp=answer["sdp"], type=answer["type"], pc_id=answer["pc_id"], session_id=session.id
    )


@router.patch(
    "/v1/agents/{agent_id}/webrtc/offer",
    status_code=204,
    response_class=Response,
    summary="Add trickled ICE candidates to a browser call",
)
async def webrtc_ice_candidates(
    agent_id: str, body: IceCandidates, caller: KeyOrLoginCallerDep, peers: PeersDep
) -> Response:
    peers.check_owner(body.pc_id, caller.account_id, agent_id)
    request = SmallWebRTCPatchRequest(
        pc_id=body.pc_id,
        candidates=[
            IceCandidate(c.candidate.removeprefix("candidate:"), c.sdp_mid, c.sdp_mline_index)  # type: ignore[arg-type]  # aiortc takes either as None
            for c in body.candidates
        ],
    )
    try:
        await peers.handler.handle_patch_request(request)
    except HTTPException as exc:
        raise APIError(404, "peer_connection_not_found", str(exc.detail)) from None
    except (ValueError, IndexError, AssertionError) as exc:
        logger.info(f"WebRTC call {body.pc_id}: bad ICE candidate ({type(exc).__name__}: {exc})")
        raise APIError(400, "invalid_candidate", "an ICE candidate could not be parsed") from None
    return Response(status_code=204)
