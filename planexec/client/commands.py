"""The people commands of ``planexec``: ``plan``, ``runs list|show|watch``, ``approve``.

They talk HTTP only (:class:`PlanexecClient`), configured from ``PLANEXEC_PLANNER_URL``,
``PLANEXEC_EXECUTOR_URL`` and ``PLANEXEC_API_KEY`` with ``--planner-url`` / ``--executor-url``
to override. Exit codes: 0 done (a run succeeded); 1 a plan was rejected, a run failed, or an
approval on record differs from the one asked; 2 an API error (printed as
``error: <title>: <detail>``), an unreachable service, or a run that stopped paused, waiting for
attention or cancelled; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .http import (
    ApiProblemError,
    ApiUnreachableError,
    ClientConfig,
    PlanexecClient,
)
from .models import RunDetail, RunEvent
from .progress import (
    FINAL_RUN_EVENTS,
    RESTING_RUN_EVENTS,
    TERMINAL_STEP_STATUSES,
    RunProgress,
    event_line,
)

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported where a command renders, not here: `planexec planner|executor|worker`
# build this parser too and need none of it.

Command = Callable[[argparse.Namespace, PlanexecClient, "Console"], int]
RUN_STATUSES = (
    "pending",
    "running",
    "paused",
    "needs_attention",
    "succeeded",
    "failed",
    "cancelled",
)
_EXIT_BY_STATUS = {"succeeded": 0, "failed": 1}
RECONNECT_PATIENCE_S = 30.0
"""How long ``watch`` keeps retrying an executor it has already reached, in seconds."""


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@FILE`` (argparse ``type``)."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _emit(out: Console, line: str) -> None:
    """One plain line, flushed at once so a pipe or log sees it as it happens."""
    print(line, file=out.file, flush=True)


def cmd_plan(args: argparse.Namespace, client: PlanexecClient, out: Console) -> int:
    """``planexec plan INTENT``: create a plan version, print it, optionally run and watch it."""
    from .render import plan_renderable

    execute = args.execute or args.watch
    plan = client.create_plan(
        args.intent, context=args.context, backend=args.backend, draft=args.draft, execute=execute
    )
    rejected = plan.status == "rejected"
    if args.json:
        _emit(out, plan.model_dump_json(indent=2))
        return 1 if rejected else 0
    out.print(plan_renderable(plan))
    if rejected:
        return 1
    if not execute:
        return 0
    if not args.watch:
        _emit(out, f"queued for execution: planexec runs list --plan-id {plan.plan_id}")
        return 0
    _emit(out, "waiting for a worker to start the run ...")
    run = client.wait_for_run_of(str(plan.plan_id), timeout_s=args.wait_s)
    _emit(out, f"run {run.run_id}")
    return watch_run(client, str(run.run_id), out)


def cmd_runs_list(args: argparse.Namespace, client: PlanexecClient, out: Console) -> int:
    """``planexec runs list``: the tenant's runs, newest first."""
    from .render import runs_table

    page = client.list_runs(status=args.status, plan_id=args.plan_id, limit=args.limit)
    if args.json:
        _emit(out, page.model_dump_json(indent=2))
    else:
        out.print(runs_table(page))
    return 0


def cmd_runs_show(args: argparse.Namespace, client: PlanexecClient, out: Console) -> int:
    """``planexec runs show RUN_ID``: a run's steps, attempts, durations, errors, approvals."""
    from .render import run_detail_renderable

    run = client.get_run(args.run_id)
    if args.json:
        _emit(out, run.model_dump_json(indent=2))
    else:
        out.print(run_detail_renderable(run))
    return 0


def cmd_runs_watch(args: argparse.Namespace, client: PlanexecClient, out: Console) -> int:
    """``planexec runs watch RUN_ID``: follow a run live until it ends or waits for a person."""
    return watch_run(client, args.run_id, out)


def cmd_approve(args: argparse.Namespace, client: PlanexecClient, out: Console) -> int:
    """``planexec approve RUN_ID STEP_ID``: record an approver's decision on a gated step."""
    asked = "reject" if args.reject else "approve"
    result = client.decide_approval(
        args.run_id, args.step_id, approve=not args.reject, comment=args.comment
    )
    verb = "approved" if result.decision == "approve" else "rejected"
    if result.recorded:
        _emit(out, f"step {result.step_id} of run {result.run_id} {verb} by {result.decided_by}")
        _emit(out, "recorded by this call")
    else:
        _emit(
            out,
            f"step {result.step_id} of run {result.run_id} was already {verb} by "
            f"{result.decided_by}",
        )
        _emit(out, "not recorded by this call: the earlier decision stands")
    return 0 if result.decision == asked else 1


def watch_run(client: PlanexecClient, run_id: str, out: Console) -> int:
    """Follow a run's event stream and report how it stopped; the exit code of ``watch``.

    First the history is replayed (``follow=false``) so a run that paused, resumed and paused
    again is judged by its latest state; then the live stream is followed until a ``run.*``
    final event, or a resting one (``run.paused``, ``run.needs_attention``) that a fresh read
    of the run confirms. On a terminal a rich ``Live`` view (progress bar and step table) is
    redrawn in place; otherwise one line per event is printed. Either way the run's step table
    (attempts, durations, errors) and the outcome are printed at the end.

    Returns:
        0 succeeded, 1 failed, 2 paused, needing attention or cancelled.
    """
    from rich.live import Live

    from .render import progress_renderable

    progress = RunProgress.start(client.get_run(run_id))
    interactive = out.is_terminal
    live = Live(progress_renderable(progress), console=out, refresh_per_second=8, transient=True)

    def show(event: RunEvent) -> None:
        progress.apply(event)
        if interactive:
            live.update(progress_renderable(progress))
        else:
            _emit(out, event_line(event))

    settled: RunDetail | None = None
    with live if interactive else contextlib.nullcontext():
        for event in client.events(run_id, follow=False):
            show(event)
        settled = _settled(client, run_id, progress)
        if settled is None:
            live_events = client.events(run_id, after=progress.last_seq, reached=True)
            with contextlib.closing(live_events) as events:
                for event in events:
                    show(event)
                    if event.type in FINAL_RUN_EVENTS or event.type in RESTING_RUN_EVENTS:
                        settled = _settled(client, run_id, progress)
                        if settled is not None:
                            break
    return _report(settled or client.get_run(run_id, patience_s=RECONNECT_PATIENCE_S), out)


def _settled(client: PlanexecClient, run_id: str, progress: RunProgress) -> RunDetail | None:
    """The run, read again, when it is over or waits for a person; None while it moves on."""
    if progress.status not in RESTING_RUN_EVENTS.values() and (
        progress.status not in FINAL_RUN_EVENTS.values()
    ):
        return None
    current = client.get_run(run_id, patience_s=RECONNECT_PATIENCE_S)
    if current.status in FINAL_RUN_EVENTS.values() or current.status == progress.status:
        return current
    progress.status = current.status  # resumed since (e.g. approved): keep following
    return None


def _report(run: RunDetail, out: Console) -> int:
    """Print the run's steps and outcome; return the exit code for its status."""
    from .render import run_steps_table

    out.print(run_steps_table(run))
    finished = sum(1 for s in run.steps if s.status in TERMINAL_STEP_STATUSES)
    _emit(out, f"run {run.run_id} {run.status}: {finished}/{len(run.steps)} steps finished")
    if run.status == "paused":
        waiting = [s.step_id for s in run.steps if s.status == "awaiting_approval"]
        _emit(out, f"waiting for approval: {', '.join(waiting) or '(none)'}")
        for step_id in waiting:
            _emit(out, f"  planexec approve {run.run_id} {step_id}   (or --reject --comment WHY)")
    elif run.status == "needs_attention":
        steps = ", ".join(s.step_id for s in run.steps if s.status == "needs_attention")
        _emit(out, f"an operator must decide about: {steps or '(none)'}")
    elif run.status not in ("succeeded", "failed", "cancelled"):
        _emit(out, f"error: the event stream ended while the run is {run.status}")
    return _EXIT_BY_STATUS.get(run.status, 2)


def _problem_lines(exc: ApiProblemError) -> list[str]:
    lines = [f"error: {exc.title}: {exc.detail}".rstrip(": ")]
    for item in exc.errors[:20]:
        if isinstance(item, dict):
            where = item.get("loc") or item.get("step_id") or item.get("path") or ""
            if isinstance(where, list):
                where = ".".join(str(p) for p in where)
            message = item.get("msg") or item.get("message") or json.dumps(item)
            lines.append(f"  {where}: {message}" if where else f"  {message}")
        else:
            lines.append(f"  {item}")
    return lines


def _entry(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build the client from the environment and flags, map errors to exit 2."""

    def run(args: argparse.Namespace) -> int:
        config = ClientConfig.from_env(planner_url=args.planner_url, executor_url=args.executor_url)
        from .render import make_console

        out = make_console()
        try:
            with PlanexecClient(config) as client:
                return command(args, client, out)
        except ApiProblemError as exc:
            for line in _problem_lines(exc):
                print(line, file=sys.stderr)
            return 2
        except ApiUnreachableError as exc:
            print(f"error: cannot reach {exc.url}: {exc.reason}", file=sys.stderr)
            return 2
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    return run


def add_people_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plan``, ``runs`` and ``approve`` to the ``planexec`` subcommand parser ``sub``."""
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument(
        "--planner-url", help="planner API base URL (PLANEXEC_PLANNER_URL; http://127.0.0.1:8100)"
    )
    conn.add_argument(
        "--executor-url",
        help="executor API base URL (PLANEXEC_EXECUTOR_URL; http://127.0.0.1:8200)",
    )

    plan = sub.add_parser(
        "plan", parents=[conn], help="turn an intent into a plan; optionally run and watch it"
    )
    plan.add_argument("intent", help="what you want done, in words")
    plan.add_argument(
        "--context", type=_json_object, default={}, help="facts as a JSON object, or @FILE"
    )
    plan.add_argument(
        "--draft", type=_json_object, help='your own plan body ({"steps": [...]}), or @FILE'
    )
    plan.add_argument("--backend", choices=("template", "openai", "draft"))
    plan.add_argument("--execute", action="store_true", help="queue the plan for execution")
    shown = plan.add_mutually_exclusive_group()
    shown.add_argument(
        "--watch", action="store_true", help="wait for the run and follow it (implies --execute)"
    )
    shown.add_argument("--json", action="store_true", help="print the plan version as JSON")
    plan.add_argument(
        "--wait-s",
        type=float,
        default=60.0,
        help="how long --watch waits for a worker to start the run, in seconds (default 60)",
    )
    plan.set_defaults(func=_entry(cmd_plan))

    runs = sub.add_parser("runs", help="list, show and watch runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = runs_sub.add_parser("list", parents=[conn], help="the tenant's runs, newest first")
    listing.add_argument("--status", choices=RUN_STATUSES)
    listing.add_argument("--plan-id")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1..200)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_entry(cmd_runs_list))
    show = runs_sub.add_parser("show", parents=[conn], help="a run's steps and approvals")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_entry(cmd_runs_show))
    watch = runs_sub.add_parser("watch", parents=[conn], help="follow a run live")
    watch.add_argument("run_id")
    watch.set_defaults(func=_entry(cmd_runs_watch))

    approve = sub.add_parser(
        "approve", parents=[conn], help="approve (or --reject) a step waiting at its gate"
    )
    approve.add_argument("run_id")
    approve.add_argument("step_id")
    approve.add_argument("--reject", action="store_true", help="reject instead of approve")
    approve.add_argument("--comment", help="why, stored with the decision")
    approve.set_defaults(func=_entry(cmd_approve))
