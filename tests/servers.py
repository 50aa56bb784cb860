"""The web app served for tests: under uvicorn on a free port, and the address it answers to."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from deepfake_detect.http_guards import server_config

BASE_URL = "http://127.0.0.1:8000"  # what a browser on this machine sends as Host and Origin


@contextmanager
def live_server(app, **limits) -> Iterator[str]:
    """The app under uvicorn (with `server_config`'s limits) in a thread on a free loopback
    port; yields its base URL."""
    config = server_config(app, "127.0.0.1", 0, log_level="warning", **limits)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
