"""supertokens-node 24.0.3 as the second behavioural oracle: ``tests/node_oracle.js`` (express and
``verifySession()``) as a real process, against a given core. ``scripts/install-node`` installs it
(``npm ci`` of ``bench/node``'s lock file)."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "bench" / "node" / "node_modules"
SCRIPT = ROOT / "tests" / "node_oracle.js"
START_SECONDS = 30.0


class NodeOracle:
    """One node process serving the oracle routes of ``tests/sdk_oracle.py`` (``ROUTES``)."""

    def __init__(self, core_url: str, api_key: str | None) -> None:
        if not (NODE_MODULES / "supertokens-node" / "package.json").is_file():
            raise RuntimeError(f"{NODE_MODULES} lacks supertokens-node: run scripts/install-node")
        env = {**os.environ, "TEST_MODE": "testing", "NODE_PATH": str(NODE_MODULES), "CORE_URL": core_url,
               "API_KEY": api_key or ""}
        # Node's own 16 KB header limit (431) is no SDK decision: raised, as the service's servers allow more.
        self._process = subprocess.Popen(["node", "--max-http-header-size=65536", str(SCRIPT)], env=env,
                                         stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_SECONDS)
        line = self._process.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            self.close()
            raise RuntimeError(f"the node oracle did not start: {line!r}")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{int(line.split()[1])}", timeout=10.0)

    def init(self, **session: Any) -> None:
        """Re-initialise the SDK with these ``Session.init`` options."""
        self.client.post("/__init", json=session).raise_for_status()

    def request(self, method: str, path: str, headers: dict[str, bytes] | None = None,
                **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, headers=headers, **kwargs)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
