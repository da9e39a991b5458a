"""The ``planexec`` command line.

Services: ``planner``, ``executor``, ``worker``, ``migrate``, ``keys``, ``prune``. For people
(over HTTP): ``plan``, ``runs list|show|watch``, ``approve``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from planexec.client import add_people_commands
from planexec.settings import CommonSettings
from shared_schemas import Role

if TYPE_CHECKING:
    from executor_service.settings import ExecutorSettings

S = TypeVar("S", bound=CommonSettings)


def _settings(cls: type[S]) -> S:
    """Settings of ``cls`` from the environment; exits with the reason when they are invalid."""
    try:
        return cls()
    except ValidationError as exc:
        sys.exit(f"planexec: invalid settings: {exc}")


def _common() -> CommonSettings:
    return _settings(CommonSettings)


def _serve(app: Any, host: str, port: int, **options: Any) -> None:
    """Run ``app`` (an ASGI app, or an import string with ``factory=True``) with uvicorn.

    uvicorn re-raises a SIGTERM it handled once it has shut down; with the default action
    that would end the process before ``atexit`` hooks run (the embedded Postgres handle is
    released in one), so the re-raised signal becomes a clean ``SystemExit(0)``.
    """
    import uvicorn

    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        **options,
    )


def cmd_migrate(_: argparse.Namespace) -> int:
    """Upgrade the ``planner`` and ``executor`` schemas to the latest revision."""
    from planexec.db import database_url_for, upgrade

    settings = _common()
    upgrade(database_url_for(settings))
    print("planexec: database migrated to head", file=sys.stderr)
    return 0


def cmd_planner(args: argparse.Namespace) -> int:
    """Serve the planner API with uvicorn."""
    from planexec.db import database_url_for, upgrade
    from planexec.logging import configure_logging
    from planner_service.app import create_app
    from planner_service.settings import PlannerSettings

    settings = _settings(PlannerSettings)
    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    configure_logging(settings.log_level, json=settings.log_json)
    if args.migrate:
        upgrade(database_url_for(settings))
    if args.workers > 1:
        # Worker processes rebuild the settings from the environment.
        os.environ["PLANEXEC_HOST"] = settings.host
        os.environ["PLANEXEC_PORT"] = str(settings.port)
        _serve(
            "planner_service.asgi:create_app_from_env",
            settings.host,
            settings.port,
            factory=True,
            workers=args.workers,
        )
        return 0
    _serve(create_app(settings), settings.host, settings.port)
    return 0


def _executor_settings() -> ExecutorSettings:
    from executor_service.settings import ExecutorSettings

    return _settings(ExecutorSettings)


def cmd_executor(args: argparse.Namespace) -> int:
    """Serve the executor API with uvicorn."""
    from executor_service.app import create_app
    from planexec.db import database_url_for, upgrade
    from planexec.logging import configure_logging

    settings = _executor_settings()
    updates = {"executor_host": args.host, "executor_port": args.port}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v})
    configure_logging(settings.log_level, json=settings.log_json)
    if args.migrate:
        upgrade(database_url_for(settings))
    _serve(create_app(settings), settings.executor_host, settings.executor_port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker that leases and drives runs until SIGTERM."""
    stopped_early: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: stopped_early.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    from executor_service.worker_main import run_worker
    from planexec.logging import configure_logging

    settings = _executor_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if stopped_early:
        return 0  # asked to stop while importing: nothing was started
    asyncio.run(run_worker(settings, concurrency=args.concurrency))
    return 0


async def _keys(args: argparse.Namespace) -> int:
    from planexec.auth import ApiKeyStore
    from planexec.db import create_engine, database_url_for

    settings = _common()
    url = await asyncio.to_thread(database_url_for, settings)
    engine = create_engine(url, pool_size=1, max_overflow=0)
    store = ApiKeyStore(engine)
    try:
        if args.keys_command == "create":
            try:
                issued = await store.create(
                    tenant=args.tenant,
                    subject=args.subject or f"{getpass.getuser()}@cli",
                    roles=[Role(r) for r in args.role],
                    scopes=args.scope or [],
                    description=args.description,
                )
            except ValidationError as exc:
                print(f"planexec: {exc}", file=sys.stderr)
                return 2
            print(issued.token)
            print(
                f"key {issued.key_id} for tenant {args.tenant}: shown once, store it now",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for info in await store.list(args.tenant):
                state = "revoked" if info.revoked_at else "active"
                print(
                    f"{info.key_id}  {info.tenant}  {info.subject}  roles={','.join(info.roles)}"
                    f"  scopes={','.join(info.scopes)}  {state}"
                )
        elif args.keys_command == "revoke":
            if not await store.revoke(args.key_id):
                print(f"planexec: no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}", file=sys.stderr)
    finally:
        await engine.dispose()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    return asyncio.run(_keys(args))


async def _prune(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from planexec.db import create_engine, database_url_for
    from planexec.retention import prune

    settings = _common()
    days = args.older_than if args.older_than is not None else settings.retention_days
    if days is None:
        print("planexec: give --older-than DAYS or set PLANEXEC_RETENTION_DAYS", file=sys.stderr)
        return 2
    url = await asyncio.to_thread(database_url_for, settings)
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        stats = await prune(
            engine, older_than=timedelta(days=days), batch=args.batch or settings.retention_batch
        )
    finally:
        await engine.dispose()
    print(
        f"pruned data older than {stats.cutoff.isoformat()}:"
        f" {stats.run_events.rows} run events ({stats.run_events.batches} batches),"
        f" {stats.generation_attempts.rows} generation attempts"
        f" ({stats.generation_attempts.batches} batches), {stats.dispatch.rows} dispatch entries,"
        f" {stats.idempotency_keys.rows} idempotency keys,"
        f" {stats.plan_cache.rows} expired plan cache entries",
        file=sys.stderr,
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete run events, plan provenance and planner bookkeeping past the retention age."""
    return asyncio.run(_prune(args))


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse ``type`` that parses with ``kind`` and refuses numbers ≤ 0."""

    def parse(value: str) -> int | float:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``planexec``."""
    parser = argparse.ArgumentParser(prog="planexec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    planner = sub.add_parser("planner", help="serve the planner API")
    planner.add_argument("--host", help="interface to listen on (PLANEXEC_HOST)")
    planner.add_argument("--port", type=int, help="port to listen on (PLANEXEC_PORT)")
    planner.add_argument("--migrate", action="store_true", help="migrate the database first")
    planner.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    planner.set_defaults(func=cmd_planner)

    executor = sub.add_parser("executor", help="serve the executor API")
    executor.add_argument("--host", help="interface to listen on (PLANEXEC_EXECUTOR_HOST)")
    executor.add_argument("--port", type=int, help="port to listen on (PLANEXEC_EXECUTOR_PORT)")
    executor.add_argument("--migrate", action="store_true", help="migrate the database first")
    executor.set_defaults(func=cmd_executor)

    worker = sub.add_parser("worker", help="lease and drive runs until SIGTERM")
    worker.add_argument(
        "--concurrency", type=int, help="runs driven at once (PLANEXEC_WORKER_CONCURRENCY)"
    )
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database schemas to head")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="a role of the key (repeatable)",
    )
    create.add_argument("--scope", action="append", help="a scope of the key (repeatable)")
    create.add_argument("--subject", help="who the key is for (default: <user>@cli)")
    create.add_argument("--description")
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    prune = sub.add_parser(
        "prune", help="delete old run events, plan provenance and planner bookkeeping"
    )
    prune.add_argument(
        "--older-than",
        type=_positive(float),
        metavar="DAYS",
        help="age in days (PLANEXEC_RETENTION_DAYS)",
    )
    prune.add_argument(
        "--batch",
        type=_positive(int),
        metavar="N",
        help="most rows deleted per transaction (PLANEXEC_RETENTION_BATCH)",
    )
    prune.set_defaults(func=cmd_prune)

    add_people_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planexec`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
