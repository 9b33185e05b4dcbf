"""gunicorn settings for running the service without the CLI: ``gunicorn -c gunicorn.conf.py``.

Every value comes from the same FORWARD_AUTH_* settings as ``forward-auth serve``.
"""

import os as _os
import tempfile as _tempfile

# prometheus-client's multiprocess mode must be set up before it is first imported.
if not _os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _tempfile.mkdtemp(prefix="forward-auth-metrics-")

from forward_auth import metrics as _metrics  # noqa: E402
from forward_auth.server import gunicorn_options as _gunicorn_options  # noqa: E402
from forward_auth.settings import load as _load  # noqa: E402

wsgi_app = "forward_auth.wsgi:get_app()"
globals().update(_gunicorn_options(_load()))


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    _metrics.worker_exited(worker.pid)
