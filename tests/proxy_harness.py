"""Real reverse proxies around the real service, on 127.0.0.1: the pieces ``test_proxies.py`` wires.

- :class:`EchoUpstream`: the application behind the proxy, a threaded HTTP server that answers
  every request with what it received (method, path, headers) as JSON, and records it; it also
  speaks just enough WebSocket to answer an upgrade (101, one text frame with the same JSON).
- :func:`start_proxy`: nginx, Traefik or Caddy run with the shipped example configuration,
  templated only for ports and for the writable paths a throw-away run needs.
- :func:`http_request` / :func:`websocket_request`: a client that keeps every response header
  (all the ``Set-Cookie`` lines, in order).
- :class:`DevCore`: the development core's session, token and revocation calls.
- :class:`HungCore`: a core that serves the real core's signing keys and never answers anything else
  (``test_process.py`` and ``bench/edge_bench.py``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
INSTALL_HINT = "run scripts/install-proxies (as root) to install nginx, Traefik and Caddy"

#: The ports the shipped examples use, replaced by free ports in a test run.
EXAMPLE_LISTEN, EXAMPLE_AUTH, EXAMPLE_APP, EXAMPLE_BACKEND, EXAMPLE_CADDY_ADMIN = 8000, 8080, 3000, 3001, 2019


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any] | None = None, log: Path | None = None,
              timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:port accepts connections (or the process died: fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s:\n{_tail(log)}")


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, output to ``log``; SIGTERM to its group on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --- the application behind the proxy -------------------------------------------------------

@dataclass
class Received:
    """One request as the upstream received it (raw header names, in order)."""

    method: str
    path: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        """Values of ``name``, also under its aliases (``X_User_Id`` reads as X-User-Id to WSGI)."""
        wanted = name.lower().replace("_", "-")
        return [v for k, v in self.headers if k.lower().replace("_", "-") == wanted]

    def get(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None


WS_MAGIC = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the stderr log
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        received = Received(self.command, self.path, list(self.headers.items()))
        self.server.record(received)
        payload = json.dumps({"method": received.method, "path": received.path,
                              "headers": received.headers}).encode()
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            self._websocket(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Echo", "1")
        # The application's own cookie: must survive next to the auth service's cookies.
        self.send_header("Set-Cookie", "app-cookie=1; Path=/")
        self.end_headers()
        self.wfile.write(payload)

    def _websocket(self, payload: bytes) -> None:
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_MAGIC).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        # One unmasked text frame with the echo, then a close frame.
        self.wfile.write(_ws_frame(0x1, payload) + _ws_frame(0x8, b"\x03\xe8"))
        self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


def _ws_frame(opcode: int, data: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        return head + bytes([len(data)]) + data
    if len(data) < 1 << 16:
        return head + bytes([126]) + len(data).to_bytes(2, "big") + data
    return head + bytes([127]) + len(data).to_bytes(8, "big") + data


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 dropped the SYNs of a burst: answers a second late

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _EchoHandler)
        self.requests: list[Received] = []
        self._lock = threading.Lock()

    def record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)


class EchoUpstream:
    """The application: echoes every request as JSON and records what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _EchoServer(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, marker: str) -> list[Received]:
        """The requests whose path contains ``marker`` (each case uses a unique one)."""
        with self._server._lock:
            return [r for r in self._server.requests if marker in r.path]


# --- the client -----------------------------------------------------------------------------

@dataclass
class Answer:
    """What the browser would get: status, every header (in order), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    frames: list[bytes] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self) -> dict[str, str]:
        """Set-Cookie name -> the whole header value."""
        return {v.split("=", 1)[0].strip(): v for v in self.values("Set-Cookie")}

    def echo(self) -> Received:
        """The upstream's echo of what it received (the answer must come from the upstream)."""
        data = json.loads(self.frames[0]) if self.frames else self.json
        assert "headers" in data, f"not the upstream's answer: {self.status} {self.body[:300]!r}"
        return Received(data["method"], data["path"], [tuple(h) for h in data["headers"]])

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.headers!r}, {self.body[:400]!r})"


def http_request(port: int, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
                 body: bytes | None = None, timeout: float = 15.0) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        conn.putrequest(method, path, skip_accept_encoding=True, skip_host=any(k.lower() == "host" for k, _ in items))
        for name, value in items:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        elif method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders(body)
        reply = conn.getresponse()
        return Answer(reply.status, reply.getheaders(), reply.read())
    finally:
        conn.close()


def websocket_request(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> Answer:
    """A WebSocket upgrade; on 101 the text frames received before the close frame are kept."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        stream = sock.makefile("rb")
        status_line = stream.readline().decode("latin-1")
        status = int(status_line.split()[1])
        response_headers: list[tuple[str, str]] = []
        while True:
            line = stream.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            response_headers.append((name.strip(), value.strip()))
        answer = Answer(status, response_headers, b"")
        if status != 101:
            length = int(answer.get("Content-Length") or 0)
            answer.body = stream.read(length) if length else b""
            return answer
        expected = base64.b64encode(hashlib.sha1((key + WS_MAGIC).encode()).digest()).decode()
        assert answer.get("Sec-WebSocket-Accept") == expected, answer
        while True:
            head = stream.read(2)
            if len(head) < 2:
                break
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(stream.read(2), "big")
            elif length == 127:
                length = int.from_bytes(stream.read(8), "big")
            data = stream.read(length)
            if opcode == 0x8:
                break
            answer.frames.append(data)
        return answer


# --- the development core -------------------------------------------------------------------

class DevCore:
    """``forward-auth dev-core`` as a process, and the calls the cases need."""

    def __init__(self, port: int, api_key: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._api_key = api_key

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"content-type": "application/json", "api-key": self._api_key, "cdi-version": "5.4"}
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def request_counts(self) -> dict[str, int]:
        """Every request the dev core received, counted by ``"METHOD path"`` (``GET /dev/requests``)."""
        request = urllib.request.Request(self.url + "/dev/requests", headers={"api-key": self._api_key})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return dict(json.loads(reply.read())["counts"])

    def session(self, user_id: str, roles: list[str] | None = None) -> dict[str, Any]:
        jwt_data = {"st-role": {"v": roles, "t": 0}} if roles is not None else {}
        return self.post("/dev/sessions", {"userId": user_id, "userDataInJWT": jwt_data})

    def access_token(self, user_id: str, roles: list[str] | None = None) -> str:
        return str(self.session(user_id, roles)["accessToken"]["token"])

    def mint(self, **body: Any) -> str:
        return str(self.post("/dev/tokens", body)["token"])

    def refreshed_token(self, user_id: str) -> str:
        """An access token just out of a refresh: carries parentRefreshTokenHash1 (promotion)."""
        created = self.session(user_id)
        refreshed = self.post("/recipe/session/refresh", {"refreshToken": created["refreshToken"]["token"],
                                                          "enableAntiCsrf": False, "useDynamicSigningKey": True})
        return str(refreshed["accessToken"]["token"])

    def revoked_token(self, user_id: str) -> str:
        created = self.session(user_id)
        self.post("/recipe/session/remove", {"sessionHandles": [created["session"]["handle"]]})
        return str(created["accessToken"]["token"])


@contextmanager
def dev_core(port: int, api_key: str, log: Path) -> Iterator[DevCore]:
    """``forward-auth dev-core`` on ``port``, once it answers. Start it before the service: a
    worker that boots before the core listens has no keys and answers 503 (keys-unavailable)
    until its refetch cooldown ends, while /readyz, answered by another worker, may say ready."""
    with process([sys.executable, "-m", "forward_auth", "dev-core", "--bind", f"127.0.0.1:{port}",
                  "--api-key", api_key], log):
        wait_http(f"http://127.0.0.1:{port}/hello")
        yield DevCore(port, api_key)


def tampered(token: str) -> str:
    """The same token with one character of its signature changed (not the last: padding bits)."""
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return ".".join([head, payload, signature[:middle] + swapped + signature[middle + 1:]])


# --- the proxies ----------------------------------------------------------------------------

def binary(name: str) -> str:
    """A proxy binary: nginx from the system (sbin included), Traefik and Caddy from the venv."""
    candidates = [VENV_BIN / name, Path("/usr/sbin") / name, Path("/usr/local/sbin") / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: {INSTALL_HINT}")
    return found


@dataclass(frozen=True)
class Ports:
    """Where the proxy listens and what it talks to (``backend``: the SuperTokens backend at /auth/)."""

    listen: int
    auth: int
    app: int
    backend: int | None = None


def _substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    """Apply exact replacements; each must occur (a changed example must fail loudly, not silently)."""
    for old, new in replacements:
        if old not in text:
            raise AssertionError(f"the example no longer contains {old!r}: update tests/proxy_harness.py")
        text = text.replace(old, new)
    return text


def _auth_and_app(ports: Ports) -> list[tuple[str, str]]:
    pairs = [(f"127.0.0.1:{EXAMPLE_AUTH}", f"127.0.0.1:{ports.auth}"),
             (f"127.0.0.1:{EXAMPLE_APP}", f"127.0.0.1:{ports.app}")]
    if ports.backend is not None:
        pairs.append((f"127.0.0.1:{EXAMPLE_BACKEND}", f"127.0.0.1:{ports.backend}"))
    return pairs


def render_nginx(workdir: Path, ports: Ports) -> Path:
    text = (ROOT / "nginx.conf.example").read_text()
    text = _substitute(text, [
        (f"listen {EXAMPLE_LISTEN};", f"listen 127.0.0.1:{ports.listen};"),
        ("/run/nginx-forward-auth.pid", str(workdir / "nginx.pid")),
        ("/var/log/nginx/", f"{workdir}/"),
        ("/var/lib/nginx/", f"{workdir}/"),
        *_auth_and_app(ports),
    ])
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


def render_traefik(workdir: Path, ports: Ports) -> Path:
    dynamic = _substitute((ROOT / "traefik.dynamic.example.yml").read_text(), _auth_and_app(ports))
    (workdir / "traefik.dynamic.yml").write_text(dynamic)
    static = _substitute((ROOT / "traefik.example.yml").read_text(), [
        (f'address: ":{EXAMPLE_LISTEN}"', f'address: "127.0.0.1:{ports.listen}"'),
        ("filename: traefik.dynamic.example.yml", f"filename: {workdir / 'traefik.dynamic.yml'}"),
    ])
    path = workdir / "traefik.yml"
    path.write_text(static)
    return path


def render_caddy(workdir: Path, ports: Ports, admin_port: int) -> Path:
    text = _substitute((ROOT / "Caddyfile.example").read_text(), [
        (f"admin 127.0.0.1:{EXAMPLE_CADDY_ADMIN}", f"admin 127.0.0.1:{admin_port}\n\tdefault_bind 127.0.0.1"),
        (f"\n:{EXAMPLE_LISTEN} {{", f"\n:{ports.listen} {{"),
        *_auth_and_app(ports),
    ])
    path = workdir / "Caddyfile"
    path.write_text(text)
    return path


PROXIES = ("nginx", "traefik", "caddy")


@contextmanager
def start_proxy(kind: str, workdir: Path, ports: Ports) -> Iterator[subprocess.Popen[bytes]]:
    """One proxy process with the shipped example config; yields once it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    env: dict[str, str] = {}
    if kind == "nginx":
        config = render_nginx(workdir, ports)
        args = [binary("nginx"), "-p", str(workdir), "-c", str(config), "-e", str(workdir / "error.log"),
                "-g", "daemon off;"]
    elif kind == "traefik":
        config = render_traefik(workdir, ports)
        args = [binary("traefik"), f"--configFile={config}"]
    elif kind == "caddy":
        config = render_caddy(workdir, ports, free_port())
        args = [binary("caddy"), "run", "--config", str(config), "--adapter", "caddyfile"]
        env = {"HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data"), "XDG_CONFIG_HOME": str(workdir / "config")}
    else:
        raise ValueError(kind)
    with process(args, log, env=env, cwd=workdir) as proc:
        wait_port(ports.listen, proc, log)
        _wait_routes(kind, ports.listen, proc, log)
        yield proc


def _wait_routes(kind: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    """Traefik accepts connections before its file provider's routes are in: wait for /public/."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{kind} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if http_request(port, "GET", "/public/ready", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{kind} on {port} never routed /public/ to the application:\n{_tail(log)}")


def startup_problems(kind: str, workdir: Path) -> list[str]:
    """Warnings and errors the proxy logged about the example config (known-harmless ones aside)."""
    if kind == "nginx":
        text = "\n".join(p.read_text(errors="replace") for p in workdir.glob("*error.log"))
        return [line for line in text.splitlines() if re.search(r"\[(warn|error|crit|alert|emerg)\]", line)]
    text = (workdir / f"{kind}.log").read_text(errors="replace")
    if kind == "traefik":
        return [line for line in text.splitlines() if re.search(r"\b(WRN|ERR|FTL)\b", line)]
    harmless = ("HTTP/2 skipped because it requires TLS", "HTTP/3 skipped because it requires TLS")
    return [line for line in text.splitlines()
            if re.search(r'"level":"(warn|error|fatal)"', line) and not any(h in line for h in harmless)]


def binary_version(kind: str) -> str:
    args = {"nginx": [binary("nginx"), "-v"], "traefik": [binary("traefik"), "version"],
            "caddy": [binary("caddy"), "version"]}[kind]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).strip()
    match = re.search(r"(\d+\.\d+\.\d+)", text)
    return match.group(1) if match else text


class HungCore:
    """A core on a free loopback port that serves the real core's JWKS (so that the service can verify
    locally) and holds every other request unanswered, its connection open until ``close``."""

    def __init__(self, real_core: str) -> None:
        self._jwks = urllib.request.urlopen(real_core + "/.well-known/jwks.json", timeout=5).read()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.jwks_served = 0
        self.held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        """JWKS requests answered (a kept-alive connection may ask again), the first other request held."""
        while True:
            head = b""
            while b"\r\n\r\n" not in head:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                head += chunk
            if not head.startswith(b"GET /.well-known/jwks.json"):
                with self._lock:
                    self.held.append(conn)  # never answered
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(self._jwks), self._jwks))
            with self._lock:
                self.jwks_served += 1

    def wait_held(self, count: int, timeout: float = 10.0) -> int:
        """Wait until ``count`` requests are held (or ``timeout``): how many are."""
        deadline = time.monotonic() + timeout
        while len(self.held) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.held)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for conn in self.held:
                conn.close()


@contextmanager
def hung_core(real_core: str) -> Iterator[HungCore]:
    core = HungCore(real_core)
    try:
        yield core
    finally:
        core.close()
