"""``python -m revdistill.service serve|start|status|stop [--dir D] ...``: the compute service from a shell.

``start`` starts a service unless one runs (and prints its status), replacing one that runs another checkout's
or version's code (its status names its package folder); a service it starts compiles UMAP's code at
once, so the first visitor of a served dashboard meets a warm one (``status`` says ``"umap_ready"``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from revdistill.service.protocol import SERVICE_ENV, package_root


def main(argv: Sequence[str] | None = None) -> int:
    """Serve, show the status of, or stop the server's compute service."""
    parser = argparse.ArgumentParser(prog="python -m revdistill.service", description=main.__doc__)
    parser.add_argument("command", choices=("serve", "status", "stop", "start"))
    parser.add_argument("--dir", default=None, help=f"runtime folder (default ${SERVICE_ENV} or the cache)")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="free the models after this idle time (s)")
    parser.add_argument("--exit-after", type=float, default=None, help="exit after this idle time (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of an embedding job")
    parser.add_argument("--workers", type=int, default=2, help="jobs that run at once")
    parser.add_argument("--warm-up", action="store_true",
                        help="serve: compile UMAP's code at once (start always does)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
        from revdistill.service.server import configure_process, serve  # noqa: PLC0415

        configure_process()
        return serve(args.dir, idle_timeout=args.idle_timeout, exit_after=args.exit_after, workers=args.workers,
                     threads=args.threads, warm_up=args.warm_up)
    from revdistill.service.client import ServiceClient  # noqa: PLC0415

    client = ServiceClient(args.dir, idle_timeout=args.idle_timeout, exit_after=args.exit_after,
                           threads=args.threads, workers=args.workers, warm_up=args.command == "start")
    if args.command == "start":
        status = client.status()
        if status.get("code") != package_root():  # a service of another checkout or version: stale code
            print(f"replacing the compute service {status.get('pid')} in {client.directory}: it runs revdistill "
                  f"from {status.get('code', 'an older version')}, this is {package_root()}", file=sys.stderr)
            client.shutdown()  # returns once it has ended: the next request starts this code's service
        print(json.dumps(client.status(), indent=1))
        return 0
    if args.command == "status":
        print(json.dumps(client.status(), indent=1))
        return 0
    print("stopped" if client.shutdown() else "no service was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
