"""The HTTP routes (Starlette): health, readiness, metrics, the jobs API and the dashboard.

Every request first passes :class:`_Guard`: a ``Host`` or ``Origin`` that is not one of the server's own is
refused 403 (DNS rebinding). On the API and monitoring paths a request without the token is refused 401 when it
writes, or when it reads from a server listening beyond loopback; the dashboard's paths check their sessions
themselves (:mod:`runwatch.web.pages`, :mod:`runwatch.web.forms`). Every answer carries a strict
Content-Security-Policy (no inline script or style, nothing from another origin) and the headers that keep the
pages out of frames and sniffing. Handlers are plain functions where they can be: Starlette runs them on its
worker threads, so a journal query never stalls the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runwatch import __version__
from runwatch.control import KINDS
from runwatch.web import jobs
from runwatch.web.security import Security

if TYPE_CHECKING:
    from runwatch.store import Store
    from runwatch.web.metrics import Metrics
    from runwatch.web.pages import Dash

__all__ = ["STALE_LOOP", "View", "make_app"]

STALE_LOOP = 10.0  # seconds without a turn of the main loop before /healthz says it is stuck
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_API_PATHS = ("/api/", "/healthz", "/readyz", "/metrics")  # the token's paths; the rest is the dashboard's
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes a browser send Origin: null on POSTs
)


@dataclass
class View:
    """What the routes read of the daemon; each callable is safe to call from the server's threads."""

    store: Store
    metrics: Metrics
    security: Security
    turned_at: Callable[[], float]  # monotonic moment of the main loop's last turn
    problems: Callable[[], list[str]]  # why the daemon is not ready; empty when it is
    stale_after: float = STALE_LOOP
    dash: Dash | None = None  # the dashboard's parts; None serves the API and monitoring only


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class _Guard:
    """Host and Origin first, then the token; as plain ASGI, ahead of routing."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app, self.security = app, security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rules = self.security
        refusal: Response | None = None
        path: str = scope["path"]
        api = path.startswith(_API_PATHS) or path == "/api/v1"
        if not rules.host_allowed(headers.get("host")):
            refusal = _json(403, {"error": "the Host header does not name this server"})
        elif not rules.origin_allowed(headers.get("origin")):
            refusal = _json(403, {"error": "requests from another site's pages are refused"})
        elif (
            api
            and (scope["method"] not in ("GET", "HEAD") or not rules.loopback)
            and not rules.authorized(headers.get("authorization"))
        ):
            why = "a token (Authorization: Bearer TOKEN) is needed" if rules.token else "no HTTP token is set"
            refusal = JSONResponse(
                {"error": why + ("" if rules.token else "; writes are off (README: Dashboard, API and monitoring)")},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="runwatch"', "Cache-Control": "no-store"},
            )

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


def make_app(view: View) -> ASGIApp:
    def healthz(request: Request) -> Response:
        age = time.monotonic() - view.turned_at()
        ok = age <= view.stale_after
        return _json(200 if ok else 503, {"status": "ok" if ok else "stuck", "loop_seconds_ago": round(age, 3)})

    def readyz(request: Request) -> Response:
        problems = view.problems()
        return _json(503 if problems else 200, {"ready": not problems, "reasons": problems})

    def metrics(request: Request) -> Response:
        return Response(view.metrics.text(), media_type=_PROMETHEUS)

    def job_list(request: Request) -> Response:
        try:
            found = jobs.page(view.store, dict(request.query_params))
        except jobs.BadQuery as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"jobs": found.jobs, "next_cursor": found.next_cursor})

    def job_one(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = view.store.get(job_id)
        if job is None:
            return _json(404, {"error": f"no job with id {job_id!r}"})
        return _json(200, jobs.document(job))

    def action(kind: str) -> Callable[[Request], Response]:
        def act(request: Request) -> Response:
            answer = jobs.command(view.store, kind, request.path_params["job_id"])
            return _json(answer.status, answer.body)

        return act

    def version(request: Request) -> Response:
        return _json(200, {"runwatch_version": __version__})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/v1", version, methods=["GET"]),
        Route("/api/v1/jobs", job_list, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", job_one, methods=["GET"]),
        *(Route(f"/api/v1/jobs/{{job_id}}/{kind}", action(kind), methods=["POST"]) for kind in KINDS),
    ]
    if view.dash is not None:
        from runwatch.web.pages import Dashboard

        routes += Dashboard(lambda: view.store, view.security, view.dash).routes()
    return _Guard(Starlette(routes=routes), view.security)
