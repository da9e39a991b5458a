"""``python -m planexec.demo [--exit]``: the demo of ``make run`` and ``make demo``.

Against a stack that runs elsewhere (the compose stack, ``docker compose run --rm demo``):
``--init`` prepares its data directory (demo repository, executor catalog config) and
``--external`` runs the demo intents against it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from planexec.settings import CommonSettings

from .external import PRIVATE_NETWORKS, ExternalStack, init, run_external
from .scenario import Demo
from .stack import DemoStack


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line (also parsed by the compose contract tests)."""
    parser = argparse.ArgumentParser(prog="planexec-demo", description=__doc__)
    parser.add_argument("--exit", action="store_true", help="exit after the intents (make demo)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--external",
        action="store_true",
        help="run the intents against a running planner and executor (--planner-url,"
        " --executor-url), with keys created in PLANEXEC_DATABASE_URL, and exit (--exit is"
        " implied): status 0 only when every outcome was the expected one",
    )
    mode.add_argument(
        "--init",
        action="store_true",
        help="create the demo git repo and the executor catalog config (for --httpbin-url)"
        " under --data-dir, then exit",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument("--planner-port", type=int, default=8100)
    parser.add_argument("--executor-port", type=int, default=8200)
    parser.add_argument("--httpbin-port", type=int, default=8300)
    parser.add_argument("--planner-url", help="--external: default http://127.0.0.1:PORT")
    parser.add_argument("--executor-url", help="--external: default http://127.0.0.1:PORT")
    parser.add_argument("--httpbin-url", help="--init: default http://127.0.0.1:PORT")
    parser.add_argument(
        "--allow-network",
        action="append",
        metavar="CIDR",
        help=f"--init: a network the executor may reach httpbin in (repeatable; default"
        f" {', '.join(PRIVATE_NETWORKS)})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bring the stack up, run the demo intents, serve until Ctrl-C (or exit with --exit)."""
    args = build_parser().parse_args(argv)
    data_dir = args.data_dir.resolve()
    if args.init:
        httpbin_url = args.httpbin_url or f"http://127.0.0.1:{args.httpbin_port}"
        path = init(data_dir, httpbin_url, args.allow_network or PRIVATE_NETWORKS)
        print(f"planexec demo: demo repo at {DemoStack(data_dir).repo}, catalog config {path}")
        return 0
    if args.external:
        stack = ExternalStack(
            data_dir,
            planner_base=args.planner_url or f"http://127.0.0.1:{args.planner_port}",
            executor_base=args.executor_url or f"http://127.0.0.1:{args.executor_port}",
        )
        try:
            return 0 if run_external(stack, CommonSettings(), sys.stdout) else 1
        except (ValueError, TimeoutError) as exc:
            print(f"planexec demo: {exc}", file=sys.stderr)
            return 2
    return run_embedded(
        DemoStack(data_dir, args.planner_port, args.executor_port, args.httpbin_port),
        exit_after=args.exit,
    )


def run_embedded(stack: DemoStack, *, exit_after: bool) -> int:
    """``make run`` / ``make demo``: start ``stack``, run the intents, serve or exit."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop everything cleanly; SIGINT is set explicitly because a
    # shell starts background jobs with it ignored, and Python keeps an inherited SIG_IGN.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    started = time.monotonic()
    ok = False
    try:
        print(
            "planexec demo: preparing the embedded Postgres, a demo git repo and keys", flush=True
        )
        stack.make_repo()
        keys = asyncio.run(stack.prepare())
        catalog = stack.write_catalog()
        print(
            "planexec demo: starting httpbin, the executor, the planner and two workers"
            f" (planner backend: {stack.planner_backend})",
            flush=True,
        )
        stack.start(keys, catalog)
        print(f"planexec demo: up in {time.monotonic() - started:.1f} s", flush=True)
        ok = Demo(stack, keys, sys.stdout).run_all()
        if not exit_after:
            print(
                f"\nServing until Ctrl-C:\n"
                f"  planner   {stack.planner_url}/docs\n"
                f"  executor  {stack.executor_url}/docs\n"
                f"  httpbin   {stack.httpbin_url}\n"
                f"  logs      {stack.demo_dir / 'logs'}\n"
                f"  submitter key  {keys.submitter}\n"
                f"  approver key   {keys.approver}",
                flush=True,
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nplanexec demo: stopping", flush=True)
    finally:
        codes = stack.stop()
        print(f"planexec demo: stopped ({', '.join(f'{k} {v}' for k, v in codes.items())})")
    if exit_after:
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
