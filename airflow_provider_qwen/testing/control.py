"""The emulator's controls for agent tests: scripts and the request log, from Python and over HTTP.

From Python, ``QwenEmulator`` has (``AgentControls``)::

    emulator.script(Turn.calls(("lookup", {"id": 7}), ("stats", "{")), Turn.text("Done."), script_id="r1")
    emulator.pending_turns("r1")                   # the turns no request has played yet
    requests = emulator.chat_requests(script="r1")  # chat requests that carried X-Emulator-Script: r1
    len(requests), requests[-1].messages, requests[0].reply["tool_calls"], requests[0].script_turn

Over HTTP, for an emulator in another process (a real Airflow deployment's), with the API key as
``Authorization: Bearer <key>`` (401 otherwise, in the service's error shape):

- ``POST /_emulator/scripts`` ``{"script_id": "r1" | null, "turns": [<turn JSON>, ...]}`` queues
  turns (``scripts.py`` has the turn JSON); answers ``{"script_id", "pending"}``. A bad body is a
  400 listing what is wrong.
- ``GET /_emulator/scripts``: ``{"scripts": [{"script_id", "pending", "turns"}]}``;
  ``DELETE /_emulator/scripts?script_id=r1`` forgets that script's turns (no ``script_id``: the
  turns for requests without the header).
- ``GET /_emulator/requests[?script=r1]``: the chat-completions requests since the last reset, in
  arrival order, each ``{"time", "status", "script", "script_turn", "client_request_id",
  "inference_id", "fault", "stream", "messages", "reply"}``: a test counts them and reads what was
  sent and answered.

These paths are the emulator's own, not the service's: they are not in the request log, the
charge log or ``/v2/logs``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_qwen.testing.responses import error_response
from airflow_provider_qwen.testing.scripts import Turn, as_turn, check_script_id
from airflow_provider_qwen.testing.state import EmulatorState, LoggedRequest

SCRIPTS_PATH = "/_emulator/scripts"
REQUESTS_PATH = "/_emulator/requests"
CHAT_SUFFIX = "/chat/completions"
UNAUTHORIZED = "Unauthorized: a valid API key is required (Authorization: Bearer <key>)"


class AgentControls:
    """Scripts and request-log reads of a ``QwenEmulator`` (its ``_state``), mixed into it."""

    _state: EmulatorState

    def script(self, *turns: Turn | str | dict[str, Any], script_id: str | None = None) -> None:
        """Queue scripted turns for requests with ``X-Emulator-Script: <script_id>`` (None: for the
        next chat requests without that header), played one per answered request, in order."""
        check_script_id(script_id)
        made = [as_turn(turn) for turn in turns]
        self._state.scripts.add(script_id, made)

    def pending_turns(self, script_id: str | None = None) -> list[Turn]:
        """Scripted turns of ``script_id`` no request has played yet."""
        return self._state.scripts.pending(script_id)

    def chat_requests(self, *, script: str | None = None) -> list[LoggedRequest]:
        """The chat-completions requests of ``requests``, in arrival order; with ``script``, only those
        that carried ``X-Emulator-Script: <script>``. Each has ``messages``, ``status``, ``reply``."""
        chat = [r for r in self._state.requests if r.path.endswith(CHAT_SUFFIX)]
        return chat if script is None else [r for r in chat if r.script == script]


def request_json(entry: LoggedRequest) -> dict[str, Any]:
    """One logged chat request as the ``/_emulator/requests`` route returns it."""
    return {
        "time": entry.time,
        "status": entry.status,
        "script": entry.script,
        "script_turn": entry.script_turn,
        "client_request_id": entry.client_request_id,
        "inference_id": entry.inference_id,
        "fault": entry.fault,
        "stream": entry.stream,
        "messages": entry.messages,
        "reply": entry.reply,
    }


def _refuse(request: Request, status: int, message: str | list[str]) -> Response:
    return error_response(status, message, request.url.path, "")


def _parse_script(payload: Any) -> tuple[str | None, list[Turn]]:
    if not isinstance(payload, dict) or set(payload) - {"script_id", "turns"}:
        raise ValueError('the body must be {"script_id": <id or null>, "turns": [...]}')
    turns = payload.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ValueError("turns must be a non-empty list of turns")
    made = []
    for index, turn in enumerate(turns):
        try:
            made.append(as_turn(turn))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"turns[{index}]: {exc}") from None
    return check_script_id(payload.get("script_id")), made


async def scripts_route(request: Request) -> Response:
    """``/_emulator/scripts``: queue (POST), list (GET) or forget (DELETE) scripted turns."""
    state: EmulatorState = request.app.state.emulator
    if not state.authorized(request.headers.get("authorization")):
        return _refuse(request, 401, UNAUTHORIZED)
    if request.method == "GET":
        listed = [
            {"script_id": key, "pending": len(turns), "turns": [t.to_json() for t in turns]}
            for key, turns in state.scripts.scripts().items()
        ]
        return JSONResponse({"scripts": listed})
    if request.method == "DELETE":
        script_id = request.query_params.get("script_id")
        try:
            state.scripts.clear(check_script_id(script_id))
        except ValueError as exc:
            return _refuse(request, 400, [str(exc)])
        return JSONResponse({"script_id": script_id, "pending": 0})
    try:
        script_id, turns = _parse_script(json.loads(await request.body() or b"null"))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return _refuse(request, 400, [str(exc)])
    return JSONResponse({"script_id": script_id, "pending": state.scripts.add(script_id, turns)})


async def requests_route(request: Request) -> Response:
    """``GET /_emulator/requests[?script=<id>]``: the chat requests logged since the last reset."""
    state: EmulatorState = request.app.state.emulator
    if not state.authorized(request.headers.get("authorization")):
        return _refuse(request, 401, UNAUTHORIZED)
    script = request.query_params.get("script")
    chat = [r for r in state.requests if r.path.endswith(CHAT_SUFFIX)]
    chosen: Sequence[LoggedRequest] = chat if script is None else [r for r in chat if r.script == script]
    return JSONResponse({"requests": [request_json(r) for r in chosen]})


def control_routes() -> list[Route]:
    """The routes ``build_app`` adds."""
    return [
        Route(SCRIPTS_PATH, scripts_route, methods=["GET", "POST", "DELETE"]),
        Route(REQUESTS_PATH, requests_route, methods=["GET"]),
    ]
