"""The simulator's inspection interface under ``/_sim`` for tests and rehearsals (requests seen, creates, tasks,
fetches, faults, the clock, the organization's figures set), and how a request shows in its log (the key masked,
bodies with signatures blanked and data URIs shortened).
"""

from __future__ import annotations

import json
from typing import Any

from runwatch.simulator.assets import mask_url
from runwatch.simulator.faults import Fault
from runwatch.simulator.handling import Routes, _error, _Reply
from runwatch.simulator.world import Task, iso_ms


class InspectionRoutes(Routes):
    """``/_sim``: what the simulator saw and did, and switches to change its world."""

    def _admin(self, method: str, path: str, raw: bytes, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        world = sim.world
        name = path[len("/_sim/") :]
        if name == "health":
            raise _Reply(200, {"ok": True, "now": iso_ms(world.clock.now())})
        if name == "requests" and method == "GET":
            since = int((query.get("since") or ["0"])[0])
            with world.lock:
                rows = [r for r in world.requests if r["seq"] > since]
            raise _Reply(200, {"requests": rows, "total": world.request_count})
        if name == "creates" and method == "GET":
            with world.lock:
                bodies = [dict(e) for e in world.create_bodies.values()]
            raise _Reply(200, {"total": sum(e["count"] for e in bodies), "bodies": bodies})
        if name == "tasks" and method == "GET":
            with world.lock:
                now = world.advance()
                rows = [_task_row(t, now) for t in world.tasks.values()]
            raise _Reply(200, {"tasks": rows, "counts": dict(world.counts())})
        if name == "fetches" and method == "GET":
            with world.lock:
                raise _Reply(200, {"fetches": list(world.fetches)})
        if name == "faults":
            if method == "GET":
                raise _Reply(200, {"faults": [f.to_json() for f in sim.faults.list()]})
            if method == "DELETE":
                sim.faults.clear()
                raise _Reply(204)
            if method == "POST":
                try:
                    sim.faults.add(Fault(**self._json(raw)))
                except (TypeError, Exception) as exc:
                    raise _error(400, f"bad fault: {exc}") from exc
                raise _Reply(201, {"faults": [f.to_json() for f in sim.faults.list()]})
        if name == "clock" and method == "POST":
            body = self._json(raw)
            world.clock.advance(float(body.get("advance", 0)))
            raise _Reply(200, {"now": iso_ms(world.clock.now())})
        if name == "organization" and method == "POST":
            self._set_org(self._json(raw))
        raise _error(404, "Not found")

    def _set_org(self, body: dict[str, Any]) -> None:
        world = self.server.sim.world
        config = world.config
        with world.lock:
            if "creditBalance" in body:
                world.balance = float(body["creditBalance"])
            if "concurrency" in body:
                config.concurrency = body["concurrency"]
            if "dailyLimit" in body:
                config.daily_limit = body["dailyLimit"]
            for model, (conc, daily) in (body.get("models") or {}).items():
                config.model_limits[model] = (conc, daily)
            world.advance()
        raise _Reply(200, world.organization_json([]))


def mask_key(value: str) -> str:
    """An Authorization header fit for the inspection log: the scheme and the key's last four digits."""
    scheme, _, key = value.partition(" ")
    return f"{scheme} {key[:4]}…{key[-4:]}" if len(key) > 12 else f"{scheme} ***"


def _task_row(task: Task, now: float) -> dict[str, Any]:
    return {
        "id": task.id,
        "endpoint": task.endpoint,
        "model": task.model,
        "status": task.status(now),
        "createdAt": iso_ms(task.created),
        "estimatedCost": task.estimate,
        "cost": task.cost,
        "failureCode": task.failure_code,
        "deleted": task.deleted,
        "outputs": task.outputs,
        "body": task.body,
    }


def _loggable(body: bytes, content_type: str) -> Any:
    if not body:
        return None
    if "json" in content_type:
        try:
            data = json.loads(body)
            return _mask_media(data)
        except ValueError:
            pass
    return {"bytes": len(body)}


def _mask_media(value: Any) -> Any:
    """Bodies as logged: signatures in URLs blanked, data URIs shortened."""
    if isinstance(value, dict):
        return {k: _mask_media(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_media(v) for v in value]
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > 80:
            return value[:48] + f"…({len(value)} chars)"
        if value.startswith(("https://", "http://")):
            return mask_url(value)
    return value
