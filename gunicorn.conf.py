"""gunicorn settings for running the service without the CLI: ``gunicorn -c gunicorn.conf.py``.

Every value comes from the same FORWARD_AUTH_* settings as ``forward-auth serve``; the workers are
gunicorn's gthread ones (``server: gunicorn``), whatever ``FORWARD_AUTH_SERVER`` says.
"""

import os as _os
import tempfile as _tempfile

# prometheus-client's multiprocess mode must be set up before it is first imported.
if not _os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _tempfile.mkdtemp(prefix="forward-auth-metrics-")

from forward_auth.server import gunicorn_options as _gunicorn_options  # noqa: E402
from forward_auth.server import master_hooks as _master_hooks  # noqa: E402
from forward_auth.settings import load as _load  # noqa: E402

wsgi_app = "forward_auth.wsgi:get_app()"
_settings = _load()
globals().update(_gunicorn_options(_settings), worker_class="gthread")
globals().update(_master_hooks(_settings))  # child_exit; with metrics_bind, when_ready, post_fork, on_exit
