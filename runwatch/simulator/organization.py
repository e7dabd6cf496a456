"""The simulator's organization routes: ``GET /v1/organization`` (balance, tiers, limits and today's use) and
``POST /v1/organization/usage`` (credits used per day over a window of at most 90 days).
"""

from __future__ import annotations

from datetime import date

from runwatch.catalog import Issue
from runwatch.simulator.handling import Routes, _error, _Reply


class OrganizationRoutes(Routes):
    """The organization's figures, as Runway reports them."""

    def _organization(self) -> None:
        sim = self.server.sim
        models = [m for ep in sim.catalog.endpoints.values() for m in ep.models]
        raise _Reply(200, sim.world.organization_json(models))

    def _usage(self, raw: bytes) -> None:
        world = self.server.sim.world
        body = self._json(raw, empty_ok=True)
        start, before = world.default_usage_window()
        try:
            if isinstance(body, dict) and body.get("startDate"):
                start = date.fromisoformat(body["startDate"])
                before = date.fromordinal(start.toordinal() + 30)
            if isinstance(body, dict) and body.get("beforeDate"):
                before = date.fromisoformat(body["beforeDate"])
        except (TypeError, ValueError) as exc:
            raise _error(
                400,
                "Validation of body failed",
                [Issue("invalid_format", ("startDate",), "Invalid date: expected YYYY-MM-DD")],
            ) from exc
        if (before - start).days > 90 or before <= start:
            raise _error(400, "beforeDate must be after startDate and at most 90 days later.")
        raise _Reply(200, world.usage_json(start, before))
