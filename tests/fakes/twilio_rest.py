"""A local stand-in for Twilio's REST API: records what the server asks Twilio to do.

Serves the requests Switchboard makes: creating a call (`POST .../Calls.json`), updating
one (`POST .../Calls/{CallSid}.json`, e.g. the hang-up `Status=completed`, or new `Twiml` such
as a `<Dial><Conference>`), and moving a waiting call out of its queue
(`POST .../Queues/{QueueSid}/Members/{CallSid}.json` with `Url`: 200 and the member, or 404 when
the call is not in the queue). A test playing Twilio's side of a call puts it in a queue
(`enqueue`) or takes it out when the caller hangs up (`hang_up_member`).
Point the server at it with `TWILIO_API_BASE_URL`.
"""

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class RestRequest:
    path: str
    form: dict[str, list[str]]
    username: str | None
    password: str | None
    at: float
    sid: str | None = None
    """The Call SID the fake gave a call it created."""

    def value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


class FakeTwilioRest:
    def __init__(self, account_sid: str, auth_token: str):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[RestRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._queue_sids: dict[str, str] = {}
        """Queue name → SID (Twilio makes a queue the first time `<Enqueue>` names it)."""
        self._members: dict[str, list[tuple[str, float]]] = {}
        """Queue SID → (CallSid, enqueued at) in arrival order."""
        self._queue_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "FakeTwilioRest":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                username = password = None
                auth = self.headers.get("authorization", "")
                if auth.startswith("Basic "):
                    username, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                request = RestRequest(
                    self.path,
                    parse_qs(body, keep_blank_values=True),
                    username,
                    password,
                    time.time(),
                )
                fake.requests.append(request)
                status, answer = fake._answer(request)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, request: RestRequest) -> tuple[int, dict]:
        if (request.username, request.password) != (self.account_sid, self.auth_token):
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/Calls"
        if request.path == f"{prefix}.json":
            sid = request.sid = "CA" + uuid.uuid4().hex
            return 201, {
                "sid": sid,
                "account_sid": self.account_sid,
                "status": "queued",
                "to": request.value("To"),
                "from": request.value("From"),
            }
        member = re.fullmatch(
            rf"/2010-04-01/Accounts/{self.account_sid}/Queues/(QU[0-9a-f]+)/Members/(\w+)\.json",
            request.path,
        )
        if member:
            return self._dequeue(member.group(1), member.group(2), request)
        match = re.fullmatch(re.escape(prefix) + r"/(CA[0-9a-f]+)\.json", request.path)
        if match:
            return 200, {
                "sid": match.group(1),
                "account_sid": self.account_sid,
                "status": request.value("Status"),
            }
        return 404, {
            "code": 20404,
            "message": "The requested resource was not found",
            "status": 404,
        }

    def enqueue(self, name: str, call_sid: str) -> tuple[str, int]:
        """Put a call in the named queue as `<Enqueue>` does: the queue's SID and the call's position."""
        with self._queue_lock:
            sid = self._queue_sids.setdefault(name, "QU" + uuid.uuid4().hex)
            members = self._members.setdefault(sid, [])
            members.append((call_sid, time.time()))
            return sid, len(members)

    def hang_up_member(self, call_sid: str) -> None:
        """The caller hung up: the call leaves its queue."""
        with self._queue_lock:
            for sid, members in self._members.items():
                self._members[sid] = [m for m in members if m[0] != call_sid]

    def members(self, queue_sid: str) -> list[str]:
        with self._queue_lock:
            return [call_sid for call_sid, _ in self._members.get(queue_sid, [])]

    def _dequeue(self, queue_sid: str, call_sid: str, request: RestRequest) -> tuple[int, dict]:
        if not request.value("Url"):
            return 400, {"code": 21205, "message": "Url is required", "status": 400}
        with self._queue_lock:
            members = self._members.get(queue_sid, [])
            if call_sid == "Front" and members:
                call_sid = members[0][0]
            position = next((i for i, m in enumerate(members) if m[0] == call_sid), None)
            if position is None:
                return 404, {
                    "code": 20404,
                    "message": "The requested resource was not found",
                    "status": 404,
                }
            _, enqueued = members.pop(position)
        return 200, {
            "call_sid": call_sid,
            "queue_sid": queue_sid,
            "position": position + 1,
            "wait_time": int(time.time() - enqueued),
            "date_enqueued": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(enqueued)),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Queues/{queue_sid}/Members/{call_sid}.json",
        }

    def dequeues(self) -> list[RestRequest]:
        """Every request to move a queue member (whether or not the call was still there)."""
        return [r for r in self.requests if "/Members/" in r.path]

    def wait_for_dequeue(self, call_sid: str, timeout: float = 30) -> RestRequest:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.dequeues():
                if request.path.endswith(f"/Members/{call_sid}.json"):
                    return request
            time.sleep(0.05)
        raise TimeoutError(f"{call_sid} was not moved out of its queue within {timeout}s")

    def created_calls(self) -> list[RestRequest]:
        return [r for r in self.requests if r.path.endswith("/Calls.json")]

    def twiml_updates(self, call_sid: str) -> list[str]:
        """The TwiML the server gave the call `call_sid` (REST updates), in order."""
        return [
            r.value("Twiml") or ""
            for r in self.requests
            if r.path.endswith(f"/Calls/{call_sid}.json") and r.value("Twiml")
        ]

    def hang_ups(self, call_sid: str) -> list[RestRequest]:
        return [
            r
            for r in self.requests
            if r.path.endswith(f"/Calls/{call_sid}.json") and r.value("Status") == "completed"
        ]

    def wait_for_hang_up(self, call_sid: str, timeout: float = 30) -> RestRequest:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.hang_ups(call_sid)
            if found:
                return found[0]
            time.sleep(0.05)
        raise TimeoutError(
            f"no hang-up for {call_sid} within {timeout}s; requests: {[r.path for r in self.requests]}"
        )
