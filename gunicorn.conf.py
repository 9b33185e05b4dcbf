"""gunicorn settings for running the service without the CLI: ``gunicorn -c gunicorn.conf.py``.

Every value comes from the same FORWARD_AUTH_* settings as ``forward-auth serve``.
"""

from forward_auth.server import gunicorn_options as _gunicorn_options
from forward_auth.settings import load as _load

wsgi_app = "forward_auth.wsgi:get_app()"
globals().update(_gunicorn_options(_load()))
