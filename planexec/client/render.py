"""Rich renderings of plans, runs and live run progress for the people CLI.

Each function returns a ``rich`` renderable and prints nothing; the commands decide where it
goes. Colours are only emitted on a terminal (rich strips them otherwise).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import IO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .models import PlanVersion, RunDetail, RunPage
from .progress import RunProgress

PIPE_WIDTH = 200
"""Columns used when stdout is not a terminal, so logs keep one row per line."""
_STATUS_STYLES = {
    "succeeded": "green",
    "ready": "green",
    "allow": "green",
    "running": "cyan",
    "retrying": "yellow",
    "awaiting_approval": "yellow",
    "require_approval": "yellow",
    "paused": "yellow",
    "needs_attention": "magenta",
    "failed": "red",
    "rejected": "red",
    "deny": "red",
    "cancelled": "dim",
    "skipped": "dim",
}


def make_console(file: IO[str] | None = None) -> Console:
    """A console on ``file`` (default stdout), wide enough when it is not a terminal."""
    target = file if file is not None else sys.stdout
    console = Console(file=target, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=target, highlight=False, soft_wrap=False, width=PIPE_WIDTH)
    return console


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S%z")


def plan_renderable(plan: PlanVersion) -> RenderableType:
    """The plan version: header, one row per step with its policy decision, and the issues.

    Shape: ``plan <id> version <n>: <status>``, then a table (step, tool, depends on, policy,
    rules, approval), then a table of validation issues when there are any.
    """
    header = Text.assemble(
        "plan ",
        (str(plan.plan_id), "bold"),
        f" version {plan.version}: ",
        status_text(plan.status),
        " (cache hit)" if plan.cache_hit else "",
    )
    decisions = {d.step_id: d for d in plan.policy_decisions}
    steps = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("step", "tool", "depends on", "policy", "rules", "approval"):
        steps.add_column(column)
    for step in plan.steps:
        decision = decisions.get(step.id)
        rules = ", ".join(decision.rule_ids) if decision else ""
        if decision and decision.errors:
            rules += " (errors: " + "; ".join(decision.errors) + ")"
        steps.add_row(
            step.id,
            step.tool,
            ", ".join(step.depends_on) or "-",
            status_text(decision.decision) if decision else Text("-"),
            rules or "-",
            "required" if step.requires_approval else "-",
        )
    parts: list[RenderableType] = [header, steps]
    if plan.validation.issues:
        issues = Table(
            title="validation issues", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
        )
        for column in ("step", "code", "message"):
            issues.add_column(column)
        for issue in plan.validation.issues:
            issues.add_row(issue.step_id or "-", issue.code, issue.message)
        parts.append(issues)
    return Group(*parts)


def runs_table(page: RunPage) -> Table:
    """A listing of runs: run, plan:version, status, created by, created, finished."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=36)
    table.add_column("plan", no_wrap=True, min_width=38)
    for column in ("status", "created by", "created", "finished"):
        table.add_column(column)
    for run in page.items:
        table.add_row(
            str(run.run_id),
            f"{run.plan_id}:{run.plan_version}",
            status_text(run.status),
            run.created_by,
            _when(run.created_at),
            _when(run.finished_at),
        )
    return table


def run_steps_table(run: RunDetail) -> Table:
    """A run's steps: step, tool, status, attempts, duration (first start to end), error."""
    tools = {s.id: s.tool for s in run.plan.steps}
    steps = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("step", "tool", "status", "attempts", "duration", "error"):
        steps.add_column(column)
    for step in run.steps:
        duration = (
            (step.finished_at - step.first_started_at).total_seconds()
            if step.finished_at and step.first_started_at
            else None
        )
        error = step.error or {}
        steps.add_row(
            step.step_id,
            tools.get(step.step_id, "?"),
            status_text(step.status),
            str(step.attempts),
            _seconds(duration),
            ": ".join(str(p) for p in (error.get("code"), error.get("message")) if p) or "-",
        )
    return steps


def run_detail_renderable(run: RunDetail) -> RenderableType:
    """A run: header, its steps table, and the approvals on record."""
    header = Text.assemble(
        "run ",
        (str(run.run_id), "bold"),
        f" of plan {run.plan_id} version {run.plan_version}: ",
        status_text(run.status),
        f"  (created {_when(run.created_at)} by {run.created_by})",
    )
    parts: list[RenderableType] = [header, run_steps_table(run)]
    if run.approvals:
        approvals = Table(title="approvals", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in ("step", "decision", "by", "at", "comment"):
            approvals.add_column(column)
        for a in run.approvals:
            approvals.add_row(
                a.step_id,
                status_text(a.decision),
                a.decided_by,
                _when(a.decided_at),
                a.comment or "",
            )
        parts.append(approvals)
    return Group(*parts)


def progress_renderable(progress: RunProgress) -> RenderableType:
    """Live view of a run: a bar of finished steps over all steps, and the step table."""
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        Text(f"run {progress.run_id}"),
        ProgressBar(total=max(progress.total, 1), completed=progress.finished, width=40),
        Text(f"{progress.finished}/{progress.total} steps"),
        status_text(progress.status),
    )
    steps = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("step", "tool", "status", "attempt", "note"):
        steps.add_column(column)
    for step in progress.steps.values():
        steps.add_row(
            step.step_id, step.tool, status_text(step.status), str(step.attempt or "-"), step.note
        )
    return Group(bar, steps)
