"""The dashboard's forms that write: log in and out, the buttons (approve, cancel, retry), and the submit form.

Every write needs a session (made from the token by the login form, :mod:`runwatch.web.session`) and the CSRF
token of that session in the form. A button without ``confirmed=1`` (the script sets it once the person said yes
to the confirmation naming the credits at stake) answers a confirmation page instead of acting, so a page
without script asks too. The buttons go through :func:`runwatch.web.jobs.command`, as the API's POSTs and
``runwatch approve`` do; the submit form lands a request file in an inbox (:mod:`runwatch.web.submitform`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from runwatch.control import KINDS
from runwatch.errors import Problem
from runwatch.web import jobs
from runwatch.web.pages import actions
from runwatch.web.session import LIFETIME
from runwatch.web.submitform import MAX_UPLOAD, Upload, land, read_form

if TYPE_CHECKING:
    from runwatch.web.pages import Dashboard

__all__ = ["routes"]

_FAILED_LOGIN_PAUSE = 1.0  # seconds a wrong token waits: guessing stays slow


def _next(value: Any) -> str:
    """Where to go after logging in: a path of this server only (never another site)."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text or any(ord(c) < 0x20 for c in text):
        return "/"
    return text


def routes(dash: Dashboard) -> list[BaseRoute]:
    """The forms' routes."""

    def refused(request: Request, why: str) -> Response:
        link, text = ("/login", "Log in") if dash.sessions.enabled else ("/", "Overview")
        return dash.render(request, "message.html", 403, heading="Refused", text=why, link=link, link_text=text)

    async def write_form(request: Request, *, limit: int = 64 * 1024) -> FormData | Response:
        """The form of a write, once the session and its CSRF token are checked; else the refusal."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return Response("a form needs a Content-Length\n", status_code=411, media_type="text/plain")
        if int(length) > limit:
            return dash.render(
                request,
                "message.html",
                413,
                heading="Too large",
                text=f"The form is {int(length):,} bytes; at most {limit:,} are taken.",
            )
        if not dash.logged_in(request):
            return refused(request, _login_first(dash))
        form = await request.form(max_files=20, max_fields=40)
        if not dash.sessions.csrf_ok(dash.cookie(request), _text(form.get("csrf"))):
            await form.close()
            return refused(request, "The form's CSRF token is missing or stale: load the page again and resend.")
        return form

    def login_page(request: Request) -> Response:
        return dash.render(request, "login.html", next=_next(request.query_params.get("next")), error=None)

    async def login(request: Request) -> Response:
        length = request.headers.get("content-length") or ""
        if not length.isdigit() or int(length) > 8192:
            return Response("a login form is small and says its length\n", status_code=413, media_type="text/plain")
        form = await request.form(max_files=0, max_fields=4)
        target = _next(form.get("next"))
        cookie = dash.sessions.login(_text(form.get("token")) or "")
        if cookie is None:
            await asyncio.sleep(_FAILED_LOGIN_PAUSE)
            why = "this is not the server's token" if dash.sessions.enabled else "no token is set"
            return dash.render(request, "login.html", 401, next=target, error=why)
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(
            dash.sessions.cookie,
            cookie,
            max_age=LIFETIME,
            path="/",
            httponly=True,
            samesite="strict",
            # Over TLS (here, or at a reverse proxy that says so) the cookie never travels in plain HTTP.
            secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        )
        return answer

    async def logout(request: Request) -> Response:
        form = await write_form(request)
        if isinstance(form, Response):
            return form
        answer = RedirectResponse("/", status_code=303)
        answer.delete_cookie(dash.sessions.cookie, path="/", httponly=True, samesite="strict")
        return answer

    async def act(request: Request) -> Response:
        kind, job_id = request.path_params["kind"], request.path_params["job_id"]
        if kind not in KINDS:
            return dash.missing(request, f"No action {kind!r}; the actions are {', '.join(KINDS)}.")
        form = await write_form(request)
        if isinstance(form, Response):
            return form
        job = await run_in_threadpool(dash.store.get, job_id)
        if job is None:
            return dash.missing(request, f"No job with id {job_id!r}.")
        if _text(form.get("confirmed")) != "1":
            offered = {a["kind"]: a for a in actions(job)}
            label = kind.capitalize()
            message = offered[kind]["confirm"] if kind in offered else f"{job.name} is {job.state}."
            return dash.render(
                request,
                "confirm.html",
                page="jobs",
                kind=kind,
                label=label,
                name=job.name,
                message=message,
                action=f"/jobs/{job_id}/{kind}",
                back=f"/jobs/{job_id}",
            )
        answer = await run_in_threadpool(jobs.command, dash.store, kind, job_id)
        body = answer.body
        if answer.status == 200:
            note = dash.note("ok", f"{kind.capitalize()} {job.name}: the daemon answered “{body['answer']}”.")
        elif answer.status == 202:
            note = dash.note("info", f"{kind.capitalize()} {job.name}: {body['message']}.")
        else:
            note = dash.note("bad", f"{kind.capitalize()} {job.name} was refused: {body.get('error')}.")
        return RedirectResponse(f"/jobs/{job_id}?{urlencode({'note': note})}", status_code=303)

    def submit_context(values: dict[str, str]) -> dict[str, Any]:
        endpoints = sorted(dash.catalog.endpoints)
        models = sorted({m for e in dash.catalog.endpoints.values() for m in e.models})
        inboxes = [{"name": i.config.name, "endpoint": i.config.endpoint} for i in dash.board.inboxes()]
        return {
            "page": "submit",
            "values": values,
            "endpoints": endpoints,
            "models": models,
            "inboxes": inboxes,
            "max_upload": f"{MAX_UPLOAD // 2**20} MiB",
        }

    def submit_page(request: Request) -> Response:
        if not dash.may_read(request):
            return dash.to_login(request)
        return dash.render(request, "submit.html", **submit_context({}), problems=[])

    async def submit(request: Request) -> Response:
        form = await write_form(request, limit=MAX_UPLOAD)
        if isinstance(form, Response):
            return form
        try:
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf"}
            files = [f for f in form.getlist("media") if isinstance(f, UploadFile) and f.filename]
            media = [Upload(f.filename or "", f.file) for f in files]
            names = [i.config.name for i in dash.board.inboxes()]
            parsed, problems = read_form(fields, media, names)
            if parsed is not None:
                problems = await run_in_threadpool(_busy_name, dash, parsed.inbox, parsed.name)
            if parsed is None or problems:
                return dash.render(request, "submit.html", 400, **submit_context(fields), problems=problems)
            inbox = dash.board.inbox(parsed.inbox)
            if inbox is None:  # gone with a reload between the two looks
                problem = Problem("inbox", f"{parsed.inbox} is no longer configured")
                return dash.render(request, "submit.html", 400, **submit_context(fields), problems=[problem])
            newest = await run_in_threadpool(dash.store.listing, limit=1)
            try:
                await run_in_threadpool(land, parsed, inbox.path)
            except FileExistsError as exc:
                field, _, why = str(exc).partition(": ")
                return dash.render(
                    request, "submit.html", 409, **submit_context(fields), problems=[Problem(field, why)]
                )
            except OSError as exc:
                problem = Problem("inbox", f"{inbox.path} does not take the files: {exc.strerror or exc}")
                return dash.render(request, "submit.html", 503, **submit_context(fields), problems=[problem])
        finally:
            await form.close()
        after = newest[0].seq if newest else 0
        where = urlencode({"inbox": parsed.inbox, "name": parsed.name, "after": after})
        return RedirectResponse(f"/submitted?{where}", status_code=303)

    def submitted(request: Request) -> Response:
        if not dash.may_read(request):
            return dash.to_login(request)
        query = request.query_params
        inbox, name, after = query.get("inbox", ""), query.get("name", ""), query.get("after", "0")
        found = [
            j
            for j in dash.store.listing(inbox=inbox, name=name, limit=1)
            if j.seq > (int(after) if after.isdigit() else 0)
        ]
        url = f"/jobs/{found[0].id}" if found else None
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"url": url}, headers={"Cache-Control": "no-store"})
        if url is not None:
            return RedirectResponse(url, status_code=303)
        here = f"/submitted?{urlencode({'inbox': inbox, 'name': name, 'after': after})}"
        return dash.render(request, "submitted.html", page="submit", inbox=inbox, name=name, wait=here)

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/jobs/{job_id}/{kind}", act, methods=["POST"]),
        Route("/submit", submit_page, methods=["GET"]),
        Route("/submit", submit, methods=["POST"]),
        Route("/submitted", submitted, methods=["GET"]),
    ]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _login_first(dash: Dashboard) -> str:
    if dash.sessions.enabled:
        return "Log in first: writes need a session made from the HTTP token."
    return "No HTTP token is set, so the dashboard cannot write (README: Dashboard, API and monitoring)."


def _busy_name(dash: Dashboard, inbox: str, name: str) -> list[Problem]:
    """A request of the same name still under way in the inbox would make the new one NAME.2: refused."""
    newest = dash.store.listing(inbox=inbox, name=name, limit=1)
    if newest and not newest[0].final:
        return [Problem("name", f"{name} is still {newest[0].state} in inbox {inbox}; choose another name")]
    return []
