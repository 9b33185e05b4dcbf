"""The application behind the proxy in the browser example.

- ``/public/``: the example page (stating the access token lifetime it is given, the one the
  dev core was started with), its script, and supertokens-web-js's bundle files
  (``/public/sdk/<name>.js`` -> ``node_modules/supertokens-web-js/bundle/<name>.<hash>.js``);
- ``/api/...``, ``/admin/...``, ``/optional/...``: JSON of what the proxy let through: method,
  path and the identity headers it set (the example's protected routes echo who the gate said);
- ``.../page`` under them: a server-rendered HTML page with no SuperTokens code on it (what the
  gate protects with redirects: ``signin.html`` and ``refresh.html`` are its sign-in and refresh
  pages);
- ``POST /admin/revoke-session``: revokes the caller's session (the ``X-Session-Handle`` the gate
  set) through the gate's session API, as a backend without a SuperTokens SDK would.

    SESSION_API_URL_FILE=FILE SESSION_API_KEY=... python examples/browser/app.py --port 3000 --access-token-validity 30

(``FILE`` holds the gate's URL, such as ``http://127.0.0.1:8080``: stack.py writes it once the gate
is up, which starts after this application.)
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PUBLIC = HERE / "public"
BUNDLE = HERE / "node_modules" / "supertokens-web-js" / "bundle"
IDENTITY = ("X-User-Id", "X-Session-Handle", "X-Tenant-Id", "X-Recipe-User-Id", "X-Session-Expiry",
            "X-Session-Created")


def bundle_file(name: str) -> Path | None:
    """The bundle file ``name.<contenthash>.js`` (the hash changes with every SDK release)."""
    if not name.isidentifier():  # a bare bundle name: no path, no glob characters
        return None
    found = sorted(BUNDLE.glob(f"{name}.*.js"))
    return found[0] if len(found) == 1 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args: Any, access_token_validity: int, **kwargs: Any) -> None:
        self.access_token_validity = access_token_validity  # before the base class handles the request
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the proxy logs requests
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path.startswith("/public/"):
            self._static(path.removeprefix("/public/"))
        elif (self.command, path) == ("POST", "/admin/revoke-session"):
            self._revoke()
        elif path.endswith("/page"):
            self._page()
        else:
            self._echo()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _static(self, name: str) -> None:
        if name in ("", "index.html"):
            page = (PUBLIC / "index.html").read_text()
            self._send(200, page.replace("{{access-token-validity}}", str(self.access_token_validity)).encode(),
                       "text/html; charset=utf-8")
            return
        if name == "ready":
            self._send(200, b"ready\n", "text/plain")
            return
        if name.startswith("sdk/") and name.endswith(".js"):
            file: Path | None = bundle_file(name.removeprefix("sdk/").removesuffix(".js"))
        else:
            file = PUBLIC / name if "/" not in name and (PUBLIC / name).is_file() else None
        if file is None or not file.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(200, file.read_bytes(), kind)

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        seen = {name: self.headers.get(name) for name in IDENTITY if self.headers.get(name) is not None}
        body = {"method": self.command, "path": self.path, "headers": seen}
        self._send(200, json.dumps(body).encode(), "application/json")

    def _page(self) -> None:
        """A server-rendered page: who the gate said, and the URL it was opened with."""
        user = html.escape(self.headers.get("X-User-Id") or "nobody")
        handle = html.escape(self.headers.get("X-Session-Handle") or "")
        body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Report</title></head><body>'
                f'<h1>Report</h1><p>Signed in as <b id="user">{user}</b>.</p>'
                f'<p>Session <code id="handle">{handle}</code>; opened as <code id="url">{html.escape(self.path)}</code>.</p>'
                f"</body></html>").encode()
        self._send(200, body, "text/html; charset=utf-8")

    def _revoke(self) -> None:
        """``POST /sessions/{handle}/revoke`` on the gate's session API, with its bearer secret."""
        handle = urllib.parse.quote(self.headers.get("X-Session-Handle") or "-", safe="")
        gate = Path(os.environ["SESSION_API_URL_FILE"]).read_text().strip()
        request = urllib.request.Request(f"{gate}/sessions/{handle}/revoke", data=b"",
                                         headers={"Authorization": f"Bearer {os.environ['SESSION_API_KEY']}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        self._send(status, body, "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--access-token-validity", type=int, required=True,
                        help="seconds: the dev core's --access-token-validity, which the page states")
    args = parser.parse_args()
    missing = [name for name in ("website", "supertokens", "session") if bundle_file(name) is None]
    if missing:
        raise SystemExit(f"supertokens-web-js bundle files missing ({', '.join(missing)}): "
                         f"run `npm ci` in {HERE}")
    handler = functools.partial(Handler, access_token_validity=args.access_token_validity)
    ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
