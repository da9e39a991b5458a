"""``python -m planexec.demo [--exit]``: the demo of ``make run`` and ``make demo``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from .scenario import Demo
from .stack import DemoStack


def main(argv: list[str] | None = None) -> int:
    """Bring the stack up, run the demo intents, serve until Ctrl-C (or exit with --exit)."""
    parser = argparse.ArgumentParser(prog="planexec-demo", description=__doc__)
    parser.add_argument("--exit", action="store_true", help="exit after the intents (make demo)")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument("--planner-port", type=int, default=8100)
    parser.add_argument("--executor-port", type=int, default=8200)
    parser.add_argument("--httpbin-port", type=int, default=8300)
    args = parser.parse_args(argv)
    stack = DemoStack(
        args.data_dir.resolve(), args.planner_port, args.executor_port, args.httpbin_port
    )

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
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
            "planexec demo: starting httpbin, the executor, the planner and two workers", flush=True
        )
        stack.start(keys, catalog)
        print(f"planexec demo: up in {time.monotonic() - started:.1f} s", flush=True)
        ok = Demo(stack, keys, sys.stdout).run_all()
        if not args.exit:
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
    if args.exit:
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
