"""The simulator's task routes: ``POST /v1/<endpoint>`` (validated against the catalogue, media checked, priced,
limits and balance checked), ``GET`` and ``DELETE /v1/tasks/<id>``, and the signed output files under
``/_outputs`` (with the output faults: truncated, short, garbage).
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from runwatch.catalog import Issue
from runwatch.simulator.assets import Checked, plan_outputs
from runwatch.simulator.faults import OUTPUT_ACTIONS
from runwatch.simulator.handling import Routes, _Dropped, _error, _Handled, _Reply

_OUTPUT_PATH = re.compile(r"^/_outputs/([0-9a-f-]{36})/(\d+)\.(\w+)$")


class TaskRoutes(Routes):
    """Tasks created, read and deleted, and their outputs served."""

    def _create(self, endpoint: str, raw: bytes) -> None:
        sim = self.server.sim
        body = self._json(raw)
        result = sim.catalog.validate(endpoint, body)
        if not result.ok:
            raise _error(400, "Validation of body failed", list(result.issues))
        assert result.model is not None
        checked: list[Checked] = []
        problems: list[Issue] = []
        for ref in result.media:
            outcome = sim.checker.check(endpoint, ref)
            (problems.append if isinstance(outcome, Issue) else checked.append)(outcome)  # type: ignore[arg-type]
        if problems:
            raise _error(400, "Validation of body failed", problems)
        estimate = _estimate(endpoint, result.model, body, checked, sim.config.unknown_price_credits)
        world = sim.world
        with world.lock:
            now = world.advance()
            daily = world.limits(result.model)[1]
            if daily is not None and world.daily_count(result.model, now) >= daily:
                raise _error(429, "Your daily task limit has been reached.")
            if estimate > world.balance:
                raise _error(400, "You do not have enough credits to run this task.")
            fail = sim.faults.pick(("fail",), "POST", endpoint)
            outputs = plan_outputs(sim.catalog.endpoints[endpoint].output, body)
            task = world.create(
                endpoint,
                result.model,
                body,
                estimate,
                outputs,
                fail.failure_code if fail else None,
                failure=fail.message if fail else None,
            )
        raise _Reply(200, {"id": task.id, "estimatedCost": {"credits": estimate}})

    def _get_task(self, task_id: str) -> None:
        sim = self.server.sim
        task = sim.world.visible_task(task_id)
        if task is None:
            raise _error(404, "Could not find Task")
        answer = sim.world.task_json(task, sim.output_urls(task))
        raise _Reply(200, _oddly(answer, sim.faults, "GET"))

    def _delete_task(self, task_id: str) -> None:
        if not self.server.sim.world.delete(task_id):
            raise _error(404, "Could not find Task")
        raise _Reply(204)

    def _serve_output(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        sim = self.server.sim
        match = _OUTPUT_PATH.match(path)
        if method not in ("GET", "HEAD") or not match:
            raise _Reply(403, {"message": "Forbidden"})
        task_id, index = match.group(1), int(match.group(2))
        token = (query.get("_jwt") or [""])[0]
        if not sim.signer.verify(token, task_id, index, sim.world.clock.now()):
            raise _Reply(403, {"message": "Forbidden"})  # expired or altered, as CloudFront answers
        task = sim.world.visible_task(task_id)
        if task is None or index >= len(task.outputs):
            raise _Reply(404, {"message": "Not Found"})
        if sim.config.output_delay:
            time.sleep(sim.config.output_delay)
        from runwatch.mediafiles import content_type

        data = sim._output(task, index)
        ctype = content_type(task.outputs[index])
        fault = sim.faults.pick(OUTPUT_ACTIONS, method, "outputs")
        if fault is not None and fault.action == "truncate":  # the whole file announced, part of it sent
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: int(len(data) * fault.keep)])
            self.wfile.flush()
            raise _Dropped  # and hang up
        if fault is not None and fault.action == "short":  # part of the file, as if it were all of it
            data = data[: int(len(data) * fault.keep)]
        elif fault is not None and fault.action == "garbage":
            data = random.Random(f"{task_id}:{index}:garbage").randbytes(len(data))  # noqa: S311 - not crypto
        self._send(200, data, content_type=ctype)
        raise _Handled


def _oddly(answer: dict[str, Any], faults: Any, method: str) -> Any:
    """A task answer made odd by an ``odd`` fault whose oddity fits the task's state (see faults.py)."""
    status = answer.get("status")
    wanted = {"SUCCEEDED": ("no_output", "null_output"), "RUNNING": ("nan_progress", "big_progress")}.get(
        str(status), ()
    )
    if not wanted:
        return answer
    fault = faults.pick_odd(method, wanted)
    if fault is None:
        return answer
    odd = dict(answer)
    if fault.what == "no_output":
        odd.pop("output", None)
    elif fault.what == "null_output":
        odd["output"] = None
    elif fault.what == "nan_progress":
        odd["progress"] = float("nan")  # json.dumps writes NaN, which strict JSON forbids
    else:
        odd["progress"] = 7.5
    return odd


def _estimate(endpoint: str, model: str, body: dict[str, Any], checked: list[Checked], fallback: float) -> float:
    from runwatch.catalog import format_path
    from runwatch.pricing import MediaHint, estimate

    hints = {format_path(c.ref.path): MediaHint(duration=c.duration, width=c.width, height=c.height) for c in checked}
    result = estimate(endpoint, model, body, hints)
    return float(result.credits) if result.credits is not None else fallback
