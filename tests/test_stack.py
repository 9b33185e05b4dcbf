"""``scripts/serve-browser-demo`` (``examples/browser/stack.py``) as a person runs it: started in the
background, then stopped by a signal; nothing it started may stay behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from proxy_harness import ROOT

SCRIPT = ROOT / "scripts" / "serve-browser-demo"
#: What the script execs once it has installed everything (the second signal's run skips the installs).
STACK = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "examples" / "browser" / "stack.py")]


def _descendants(pid: int) -> set[int]:
    """Every process under ``pid`` now (children, their children...)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports these processes listen on (``ss``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines()
            if any(f"pid={pid}," in line for pid in pids)}


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(("signum", "command"), [(signal.SIGTERM, [str(SCRIPT)]), (signal.SIGINT, STACK)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_everything_the_browser_demo_started(signum: int, command: list[str]) -> None:
    # As `scripts/serve-browser-demo &` starts it: a background job's SIGINT is ignored until it says otherwise.
    proc = subprocess.Popen([*command, "--proxy", "nginx"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    started: set[int] = set()
    try:
        assert proc.stdout is not None
        output = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any("Ctrl-C stops everything" in line for line in output):
            line = proc.stdout.readline()
            assert line, "".join(output)
            output.append(line)
        started = _descendants(proc.pid)
        ports = _listening_ports(started)
        assert len(ports) >= 5, (ports, output)  # dev core, app, gate, backend, nginx
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in started):
            time.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)]
        assert [port for port in sorted(ports) if not _free(port)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in started:  # what a failed run left behind (each child has a session of its own)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
