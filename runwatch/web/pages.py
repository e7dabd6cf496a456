"""The dashboard's pages: the overview, the jobs table, a job's page, its files, and the live stream.

Pages are rendered on the server (Jinja2, autoescaped) from what the journal and the status files say; the only
script is ``static/dash.js`` (live progress, confirmations), so the Content-Security-Policy allows no inline
script or style. Reads need nothing more than the API's reads: free on a loopback server, else a session (or the
token). The forms that write (buttons, submit, log in and out) are in :mod:`runwatch.web.forms`.

A job's outputs are served only from that job's outbox, only the files its status document lists, and only when
the path, links resolved, stays inside the outbox: anything else is 404.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from runwatch import __version__
from runwatch.errors import CatalogError
from runwatch.jobs.states import FINAL, State
from runwatch.outbox import outbox_of
from runwatch.redact import redact
from runwatch.web import jobs
from runwatch.web.board import overview
from runwatch.web.live import MAX_IDS

if TYPE_CHECKING:
    from runwatch.catalog import Catalog
    from runwatch.jobs.job import Job
    from runwatch.store import Store
    from runwatch.web.board import Board
    from runwatch.web.live import Live
    from runwatch.web.security import Security
    from runwatch.web.session import Sessions

__all__ = ["Dash", "Dashboard", "timeline"]

PAGE_SIZE = 50
_NOTES = 256  # flash notes kept for the next page view, oldest dropped
_KINDS = {
    "image": frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"}),
    "video": frozenset({".mp4", ".mov", ".webm", ".m4v"}),
    "audio": frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}),
}


@dataclass
class Dash:
    """What the dashboard needs beyond the API's view."""

    board: Board
    sessions: Sessions
    live: Live
    catalog: Catalog


def _short_time(stamp: Any) -> str:
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.utcoffset() is not None else "")


def _filesize(size: Any) -> str:
    if not isinstance(size, int):
        return ""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runwatch.web", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short_time"] = _short_time
    env.filters["filesize"] = _filesize
    env.globals["final"] = frozenset(state.value for state in FINAL)
    return env


def timeline(job: Job) -> list[dict[str, Any]]:
    """Every state the job entered, with its time: claimed, then the history the lifecycle keeps (states entered,
    and each earlier attempt's end when it was retried), then where it is now."""
    rows: list[dict[str, Any]] = [{"state": "accepted", "at": job.created_at, "note": "claimed from the inbox"}]
    for entry in job.history:
        if not isinstance(entry, dict):
            continue
        if "at" in entry and "state" in entry:
            rows.append({"state": str(entry["state"]), "at": entry["at"], "note": ""})
        elif "state" in entry:  # an earlier attempt, ended and retried
            task = entry.get("task_id")
            note = f"attempt ended{f' (task {task})' if task else ''}; retried"
            rows.append({"state": str(entry["state"]), "at": entry.get("finished_at") or "", "note": note})
    if rows[-1]["state"] != job.state:
        rows.append({"state": str(job.state), "at": job.finished_at or job.updated_at, "note": "now"})
    return rows


def kind_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return next((kind for kind, suffixes in _KINDS.items() if suffix in suffixes), "file")


def contained(root: Path, name: str) -> Path | None:
    """``root/name`` when it is a file and, links resolved, inside ``root``; else None."""
    try:
        base = root.resolve()
        path = (base / name).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or path == base or not path.is_file():
        return None
    return path


class Dashboard:
    """The dashboard's routes over one server's view."""

    def __init__(self, store: Callable[[], Store], security: Security, dash: Dash) -> None:
        self._store = store
        self.security = security
        self.board, self.sessions, self.live, self.catalog = dash.board, dash.sessions, dash.live, dash.catalog
        self.env = _environment()
        self._notes: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        return self._store()

    # -- helpers shared with the forms ---------------------------------------------------------------

    def cookie(self, request: Request) -> str | None:
        return request.cookies.get(self.sessions.cookie)

    def logged_in(self, request: Request) -> bool:
        return self.sessions.valid(self.cookie(request))

    def may_read(self, request: Request) -> bool:
        """As the API's reads: free on loopback; else a session, or the token in ``Authorization``."""
        return (
            self.security.loopback
            or self.logged_in(request)
            or self.security.authorized(request.headers.get("authorization"))
        )

    def to_login(self, request: Request) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)

    def note(self, kind: str, text: str) -> str:
        """Keep a note for the next page; its key for ``?note=``."""
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._notes[key] = (kind, text)
            while len(self._notes) > _NOTES:
                self._notes.popitem(last=False)
        return key

    def _note_of(self, request: Request) -> dict[str, str] | None:
        key = request.query_params.get("note")
        with self._lock:
            # Kept, not taken: the page reloads itself when the job's state changes, and the note stays.
            found = self._notes.get(key) if key else None
        return {"kind": found[0], "text": found[1]} if found else None

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        cookie = self.cookie(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        values = {
            "session": self.sessions.valid(cookie),
            "csrf": self.sessions.csrf(cookie),
            "writes": self.sessions.enabled,
            "here": here,
            "version": __version__,
            "note": self._note_of(request),
            "live": None,
            "page": "",
            **context,
        }
        html = self.env.get_template(template).render(values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def missing(self, request: Request, what: str) -> HTMLResponse:
        return self.render(request, "message.html", 404, heading="Not found", text=what, link="/jobs", link_text="Jobs")

    def outbox_of(self, job: Job) -> Path | None:
        return outbox_of(job, self.board.inbox(job.inbox))

    # -- pages ------------------------------------------------------------------------------------------

    def overview_page(self, request: Request) -> Response:
        if not self.may_read(request):
            return self.to_login(request)
        return self.render(request, "overview.html", page="overview", o=overview(self.board, self.store))

    def job_list(self, request: Request) -> Response:
        if not self.may_read(request):
            return self.to_login(request)
        query = {k: v for k, v in request.query_params.items() if k in ("state", "inbox", "name", "cursor") and v}
        error, found = None, jobs.Page([], None)
        try:
            found = jobs.page(self.store, {**query, "limit": str(PAGE_SIZE)})
        except jobs.BadQuery as exc:
            error = str(exc)
        filters = {k: v for k, v in query.items() if k != "cursor"}
        live_ids = [j["job_id"] for j in found.jobs if j["state"] not in FINAL][:MAX_IDS]
        live: dict[str, str] = {"ids": ",".join(live_ids)}
        if "cursor" not in query:  # the first page hears of newer jobs too
            live.update(filters, top=found.jobs[0]["job_id"] if found.jobs else "")
        return self.render(
            request,
            "jobs.html",
            page="jobs",
            jobs=found.jobs,
            error=error,
            query=query,
            states=[s.value for s in State],
            inboxes=[i.config.name for i in self.board.inboxes()],
            next=f"/jobs?{urlencode({**filters, 'cursor': found.next_cursor})}" if found.next_cursor else None,
            first=f"/jobs?{urlencode(filters)}",
            live=f"/live?{urlencode(live)}" if live_ids or "top" in live else None,
        )

    def job_page(self, request: Request) -> Response:
        if not self.may_read(request):
            return self.to_login(request)
        job = self.store.get(request.path_params["job_id"])
        if job is None:
            return self.missing(request, f"No job with id {request.path_params['job_id']!r}.")
        doc = jobs.document(job)
        status = {k: v for k, v in doc.items() if k not in ("job_id", "inbox")}
        outputs = [
            {
                "file": o["file"],
                "bytes": o.get("bytes"),
                "kind": kind_of(o["file"]),
                "url": f"/jobs/{job.id}/files/{o['file']}",
            }
            for o in doc["outputs"]
        ]
        return self.render(
            request,
            "job.html",
            page="jobs",
            doc=doc,
            actions=actions(job),
            timeline=timeline(job),
            outputs=outputs,
            media=self._media(job),
            body=None if job.body is None else json.dumps(redact(job.body), indent=2, ensure_ascii=False),
            status_doc=json.dumps(status, indent=2, ensure_ascii=False),
            live=None if job.final else f"/live?{urlencode({'ids': job.id})}",
        )

    def _media(self, job: Job) -> list[dict[str, Any]]:
        """The request's media: links to where Runway fetched them, or to the file runwatch kept."""
        refs = _media_refs(self.catalog, job.endpoint, job.body)
        shown = []
        for path, value in refs:
            entry: dict[str, Any] = {"path": path, "value": redact(value), "url": None, "external": False}
            if value.startswith(("https://", "http://")):
                entry.update(url=redact(value), external=True)
            elif value.startswith("data:"):
                entry["value"] = f"{value[:40]}… (inline data)"
            elif job.job_dir and contained(Path(job.job_dir), value) is not None:
                entry["url"] = f"/jobs/{job.id}/media/{value}"
            shown.append(entry)
        return shown

    def output_file(self, request: Request) -> Response:
        """An output of the job, from its outbox only."""
        if not self.may_read(request):
            return Response(status_code=401)
        job = self.store.get(request.path_params["job_id"])
        name = request.path_params["name"]
        if job is None or name not in {o.get("file") for o in job.outputs}:
            return Response("not an output of this job\n", status_code=404, media_type="text/plain")
        outbox = self.outbox_of(job)
        path = contained(outbox, name) if outbox is not None else None
        if path is None:
            return Response("not in the job's outbox\n", status_code=404, media_type="text/plain")
        return _file(path)

    def media_file(self, request: Request) -> Response:
        """A local media file the request named, from the job's own folder in the work area only."""
        if not self.may_read(request):
            return Response(status_code=401)
        job = self.store.get(request.path_params["job_id"])
        name = request.path_params["name"]
        named = {v for _, v in _media_refs(self.catalog, job.endpoint, job.body)} if job is not None else set()
        if job is None or not job.job_dir or name not in named:
            return Response("not a media file of this request\n", status_code=404, media_type="text/plain")
        path = contained(Path(job.job_dir), name)
        if path is None:
            return Response("not in the job's folder\n", status_code=404, media_type="text/plain")
        return _file(path)

    def live_stream(self, request: Request) -> Response:
        if not self.may_read(request):
            return Response(status_code=401)
        if self.live.full() or self.live.closed:
            return Response("too many live pages are open\n", status_code=503, media_type="text/plain")
        query = request.query_params
        ids = [i for i in query.get("ids", "").split(",") if i][:MAX_IDS]
        fresh: Callable[[], bool] | None = None
        if "top" in query:
            state, inbox, name = (query.get(k) or None for k in ("state", "inbox", "name"))
            top = query["top"]

            def fresh() -> bool:
                newest = self.store.listing(state=state, inbox=inbox, name=name, limit=1)
                return bool(newest) and newest[0].id != top

        return StreamingResponse(
            self.live.events(ids, fresh),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def routes(self) -> list[BaseRoute]:
        from runwatch.web import forms

        return [
            Route("/", self.overview_page, methods=["GET"]),
            Route("/jobs", self.job_list, methods=["GET"]),
            Route("/jobs/{job_id}", self.job_page, methods=["GET"]),
            Route("/jobs/{job_id}/files/{name:path}", self.output_file, methods=["GET"]),
            Route("/jobs/{job_id}/media/{name:path}", self.media_file, methods=["GET"]),
            Route("/live", self.live_stream, methods=["GET"]),
            *forms.routes(self),
            Mount("/static", StaticFiles(packages=[("runwatch.web", "static")]), name="static"),
        ]


def _file(path: Path) -> Response:
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # A file opened on its own is a sandboxed document: an output that is HTML or SVG runs nothing here.
    headers = {"Cache-Control": "private, max-age=300", "Content-Security-Policy": "default-src 'none'; sandbox"}
    return FileResponse(path, media_type=media_type, headers=headers)


def _media_refs(catalog: Catalog, endpoint: str | None, body: Any) -> list[tuple[str, str]]:
    """(field path, value) of each media reference in a request body, as the catalogue finds them."""
    if not endpoint or not isinstance(body, dict):
        return []
    try:
        found = catalog.validate(endpoint, body).media
    except CatalogError:
        return []
    return [(".".join(str(p) for p in ref.path), ref.value) for ref in found]


def actions(job: Job) -> list[dict[str, str]]:
    """The buttons a job's state allows, each with its confirmation naming the credits at stake."""
    est = job.estimated_credits
    stake = f"about {est:g} credits (runwatch's estimate)" if est is not None else "an unknown number of credits"
    name, found = job.name, []
    if job.state == State.HELD:
        found.append(("approve", "Approve", f"Approve {name}? Sending it to Runway spends {stake}."))
    if not job.final:
        if job.task_id:
            text = f"Cancel {name}? Its task runs at Runway: of {stake}, Runway charges what it bills a cancelled task."
        else:
            text = f"Cancel {name}? Nothing was sent to Runway for it yet, so none of {stake} is spent."
        found.append(("cancel", "Cancel", text))
    if job.state in (State.NEEDS_ATTENTION, State.FAILED):
        text = f"Retry {name}? A new attempt spends {stake} again."
        if job.state == State.NEEDS_ATTENTION:
            text += " Its earlier create may have made a task that was charged: check Runway's dashboard first."
        found.append(("retry", "Retry", text))
    return [{"kind": kind, "label": label, "confirm": text} for kind, label, text in found]
