"""The constant-200 Falcon app served exactly as ``forward-auth serve`` serves the service.

    python bench/edge_constant.py --bind 127.0.0.1:P --workers 2 [any other `serve` flags]

The arguments are ``forward-auth serve``'s and go through its own CLI (``forward_auth.cli.main``),
with one change: ``forward_auth.server.worker_app``, which builds the service's app in each worker,
builds ``bench/http_bench_apps.py``'s constant app instead. So whatever server, worker options and
adapter ``serve`` uses at run time (gunicorn, or granian through ``forward_auth.asgi.ASGIApp``) the
constant app gets too, and the ratio of the two measures only the gate.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from forward_auth import cli


def main(argv: list[str]) -> int:
    # prometheus-client reads its multiprocess directory when first imported, which importing
    # forward_auth.server does: make it first (serve then leaves it alone), remove it at the end.
    directory, master = cli.metrics_directory(), os.getpid()
    from http_bench_apps import constant_app

    from forward_auth import server

    def constant_worker_app(*args: Any, **kwargs: Any) -> Any:  # whatever the service's takes
        return constant_app()

    server.worker_app = constant_worker_app
    try:
        return cli.main(["serve", *argv])
    finally:
        if directory and os.getpid() == master:  # forked workers unwind through here too
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
