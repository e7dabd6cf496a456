"""``runwatch credits``: what the journal says was spent, beside Runway's balance, limits and usage report."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from runwatch.ops import EXIT_FAILURE, EXIT_OK, load_required_config, readable, write_table

if TYPE_CHECKING:
    from runwatch.jobs.job import Job

__all__ = ["credits_command", "journal_spending", "runway_spending"]


@dataclass
class _Spent:
    total: float = 0.0
    by_inbox: dict[str, float] = field(default_factory=dict)
    by_model: dict[str, float] = field(default_factory=dict)

    def add(self, amount: float, inbox: str | None, model: str | None) -> None:
        self.total += amount
        if inbox is not None:
            self.by_inbox[inbox] = self.by_inbox.get(inbox, 0.0) + amount
        key = model or "(none)"
        self.by_model[key] = self.by_model.get(key, 0.0) + amount

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": self.total, "by_model": dict(sorted(self.by_model.items()))}
        if self.by_inbox:
            out["by_inbox"] = dict(sorted(self.by_inbox.items()))
        return out


def journal_spending(jobs: Iterable[Job], today: date) -> tuple[_Spent, _Spent]:
    """Today's and this month's spending from the journal: final credits, else the estimate of a job in
    flight (it may still charge); by the UTC day the job was created."""
    from runwatch.jobs.states import ACTIVE

    day, month = _Spent(), _Spent()
    start = today.replace(day=1).isoformat()
    for job in jobs:
        created = job.created_at[:10]
        if created < start or created > today.isoformat():
            continue
        if job.credits is not None:
            amount = float(job.credits)
        elif job.state in ACTIVE and job.estimated_credits is not None:
            amount = float(job.estimated_credits)
        else:
            continue
        month.add(amount, job.inbox, job.model)
        if created == today.isoformat():
            day.add(amount, job.inbox, job.model)
    return day, month


def runway_spending(usage: Mapping[str, Any], today: date) -> tuple[_Spent, _Spent]:
    """Today's and this month's figures of ``POST /v1/organization/usage`` (net of refunds)."""
    day, month = _Spent(), _Spent()
    start = today.replace(day=1).isoformat()
    for row in usage.get("results", []) if isinstance(usage.get("results"), list) else []:
        when = row.get("date") if isinstance(row, dict) else None
        if not isinstance(when, str) or not start <= when <= today.isoformat():
            continue
        for used in row.get("usedCredits", []) or []:
            amount = used.get("amount") if isinstance(used, dict) else None
            if not isinstance(amount, int | float):
                continue
            model = str(used.get("model"))
            month.add(float(amount), None, model)
            if when == today.isoformat():
                day.add(float(amount), None, model)
    return day, month


def credits_command(
    *,
    config_file: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
    now: datetime | None = None,
) -> int:
    """``runwatch credits``: 0 when Runway answered, 1 when it did not."""
    import httpx

    from runwatch.api import RunwayClient
    from runwatch.config import load_api_key
    from runwatch.errors import ApiError, ApiStatusError
    from runwatch.store import journal_exists, open_store

    out = out or sys.stdout
    err = err or sys.stderr
    config = load_required_config(config_file, env)
    api_key = load_api_key(config, env)
    today = (now or datetime.now(UTC)).date()
    with httpx.Client(timeout=httpx.Timeout(config.runway.timeout, connect=10.0)) as http:
        api = RunwayClient(
            http, base_url=config.runway.base_url, api_key=api_key, version=config.runway.api_version, max_attempts=3
        )
        try:
            org = api.organization()
        except ApiError as exc:
            refused = isinstance(exc, ApiStatusError) and exc.status == 401
            err.write(f"runwatch credits: {'the API key was refused' if refused else 'Runway did not answer'}: {exc}\n")
            return EXIT_FAILURE
        usage_error = None
        try:
            usage = api.usage(start=today.replace(day=1).isoformat(), before=(today + timedelta(days=1)).isoformat())
        except ApiError as exc:  # the balance is still worth showing
            usage, usage_error = {}, str(exc)
    jobs: list[Job] = []
    if journal_exists(config):  # a read-only look: no state folder is made for it
        journal = open_store(config, env)
        try:
            jobs = journal.jobs(limit=1_000_000)
        finally:
            journal.close()
    ours = journal_spending(jobs, today)
    theirs = runway_spending(usage, today)
    models = _model_limits(org)
    report = {
        "date": today.isoformat(),
        "balance": org.get("creditBalance"),
        "tier": {"maxMonthlyCreditSpend": _dict(org.get("tier")).get("maxMonthlyCreditSpend")},
        "models": models,
        "spending": {
            "journal": {"today": ours[0].to_json(), "month": ours[1].to_json()},
            "runway": None if usage_error else {"today": theirs[0].to_json(), "month": theirs[1].to_json()},
        },
        "usage_error": usage_error,
    }
    if as_json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        _credits_report(report, ours, None if usage_error else theirs, usage_error, out)
    return EXIT_OK


def _model_limits(org: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: limits and the rolling day's count, for models with a limit or some use."""
    limits = _dict(_dict(org.get("tier")).get("models"))
    used = _dict(_dict(org.get("usage")).get("models"))
    rows = []
    for model in sorted(set(limits) | set(used)):
        lim = _dict(limits.get(model))
        concurrency, daily = lim.get("maxConcurrentGenerations"), lim.get("maxDailyGenerations")
        count = _dict(used.get(model)).get("dailyGenerations")
        count = count if isinstance(count, int) else 0
        if concurrency is None and daily is None and not count:
            continue
        remaining = max(0, daily - count) if isinstance(daily, int) else None
        rows.append(
            {
                "model": model,
                "maxConcurrentGenerations": concurrency,
                "maxDailyGenerations": daily,
                "dailyGenerations": count,
                "remaining": remaining,
            }
        )
    return rows


def _dict(value: Any) -> dict[str, Any]:
    """A JSON object from Runway, or an empty one for anything else (an odd answer never crashes a report)."""
    return value if isinstance(value, dict) else {}


def _credits_report(
    report: Mapping[str, Any],
    ours: tuple[_Spent, _Spent],
    theirs: tuple[_Spent, _Spent] | None,
    usage_error: str | None,
    out: TextIO,
) -> None:
    balance, cap = report["balance"], report["tier"]["maxMonthlyCreditSpend"]
    out.write(f"balance: {readable(balance) if isinstance(balance, int | float) else 'unknown'} credits\n")
    if isinstance(cap, int | float):
        out.write(f"tier: up to {readable(cap)} credits a month (maxMonthlyCreditSpend)\n")

    def limit(value: Any) -> str:
        return readable(value) if isinstance(value, int | float) else "no limit"

    out.write("\n")
    rows = [["MODEL", "CONCURRENT", "DAILY LIMIT", "USED (24 H)", "LEFT"]]
    # Unused models sharing the same limits (the usual tier) take one row, so the used ones stand out.
    idle: dict[tuple[Any, Any], list[str]] = {}
    for m in report["models"]:
        if not m["dailyGenerations"]:
            idle.setdefault((m["maxConcurrentGenerations"], m["maxDailyGenerations"]), []).append(m["model"])
    for m in report["models"]:
        group = idle.get((m["maxConcurrentGenerations"], m["maxDailyGenerations"]), [])
        if not m["dailyGenerations"] and len(group) > 3:
            continue
        rows.append(
            [
                m["model"],
                limit(m["maxConcurrentGenerations"]),
                limit(m["maxDailyGenerations"]),
                readable(m["dailyGenerations"]),
                "" if m["remaining"] is None else readable(m["remaining"]),
            ]
        )
    for (concurrency, daily), names in idle.items():
        if len(names) > 3:
            rows.append(
                [
                    f"({len(names)} other models)",
                    limit(concurrency),
                    limit(daily),
                    "0",
                    "" if daily is None else readable(daily),
                ]
            )
    write_table(rows, out)

    def cell(spent: _Spent | None, model: str | None) -> str:
        if spent is None:
            return "-"
        value = spent.total if model is None else spent.by_model.get(model)
        return "" if value is None else readable(round(value, 2))

    out.write(f"\nspent on {report['date']} (UTC) and since the 1st: runwatch's journal beside Runway's usage\n")
    names = sorted(set(ours[1].by_model) | (set(theirs[1].by_model) if theirs else set()))
    rows = [["MODEL", "TODAY", "TODAY (RUNWAY)", "MONTH", "MONTH (RUNWAY)"]]
    for model in [None, *names]:
        rows.append(
            [
                model or "total",
                cell(ours[0], model),
                cell(theirs[0] if theirs else None, model),
                cell(ours[1], model),
                cell(theirs[1] if theirs else None, model),
            ]
        )
    write_table(rows, out)
    if usage_error:
        out.write(f"Runway's usage report is unavailable: {usage_error}\n")
    inboxes = sorted(ours[1].by_inbox)
    if inboxes:
        out.write("\n")
        rows = [["INBOX", "TODAY", "MONTH"]]
        rows += [
            [name, readable(round(ours[0].by_inbox.get(name, 0.0), 2)), readable(round(ours[1].by_inbox[name], 2))]
            for name in inboxes
        ]
        write_table(rows, out)
