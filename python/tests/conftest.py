"""Fixtures: a real quotad (the binary cargo builds) on a free loopback port, with the test resources below.

The binary is $QUOTAD_BIN, else ../target/debug/quotad (``cargo build -p quotad-server``), else release."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, Optional

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
shutdown_grace = "1s"
sweep_interval = "100ms"

[metrics]
enabled = false

[defaults]
lease_ttl = "60s"
max_lease_ttl = "1h"
max_pause = "5m"

# Effectively unlimited.
[[resources]]
name = "py.plain.*"
rate = {{ limit = 1000000, period = "1s", burst = 1000000 }}

# Two per second: denials come quickly.
[[resources]]
name = "py.rate.*"
rate = {{ limit = 2, period = "1s", burst = 2 }}

# A ledger: 1000 tokens that refill one per hour, so every debit shows in `remaining`.
[[resources]]
name = "py.ledger.*"
rate = {{ limit = 1000, period = "1000h", burst = 1000 }}

# Two in flight, short leases.
[[resources]]
name = "py.conc.*"
concurrency = 2
lease_ttl = "2s"

# Fifty in flight, for the asyncio client under 500 tasks.
[[resources]]
name = "py.async.*"
concurrency = 50

# Throttle feedback: a breaker that counts every failure, an adaptive rate, pauses up to 5 s.
[[resources]]
name = "py.throttle.*"
rate = {{ limit = 1000, period = "1s", burst = 1000 }}
max_pause = "5s"
breaker = {{ failure_rate = 0.5, min_calls = 100, window = "60s", open_duration = "30s", half_open_probes = 1 }}
adaptive = {{ decrease_factor = 0.5, floor = 0.1, cooldown = "1s", increase_step = 0.05, increase_interval = "10s" }}

# A breaker that opens after two failures and stays open for a minute (watched by test_local).
[[resources]]
name = "py.breaker.*"
rate = {{ limit = 1000, period = "1s", burst = 1000 }}
breaker = {{ failure_rate = 0.5, min_calls = 2, window = "60s", open_duration = "60s", half_open_probes = 1 }}

# Final grants: two an hour, rate only, nothing stored.
[[resources]]
name = "py.final.*"
rate = {{ limit = 2, period = "1h", burst = 2 }}
settlement = false

# One token per tenant per hour.
[[resources]]
name = "py.tenant.*"
[[resources.partitions]]
descriptor = "tenant"
rate = {{ limit = 1, period = "1h", burst = 1 }}
overrides = [{{ value = "internal", bypass = true }}]

# Ten tokens an hour, three held back from batch.
[[resources]]
name = "py.prio.*"
rate = {{ limit = 10, period = "1h" }}
priority = {{ classes = ["critical", "batch"], reserve = {{ critical = 0.3 }} }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary() -> str:
    explicit = os.environ.get("QUOTAD_BIN")
    if explicit:
        return explicit
    for profile in ("debug", "release"):
        path = os.path.join(ROOT, "target", profile, "quotad")
        if os.path.exists(path):
            return path
    pytest.fail("no quotad binary: run `cargo build -p quotad-server` (or set QUOTAD_BIN)")


class Quotad:
    """A quotad process on its own port; stop() and start() again on the same port."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="quotad-py-")
        self.config = os.path.join(self.dir, "quotad.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(port=self.port))
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Quotad":
        log = open(os.path.join(self.dir, "quotad.log"), "ab")
        # quotad reads QUOTAD_* variables as config overrides: none of ours (QUOTAD_BIN) may reach it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAD_")}
        with log:  # the child has its own copy of the file
            self.proc = subprocess.Popen(
                [binary(), "--config", self.config], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quotad exited with {self.proc.returncode}; see {self.dir}/quotad.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("quotad did not start listening within 60 s")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="session")
def server() -> Iterator[Quotad]:
    q = Quotad().start()
    yield q
    q.stop(signal.SIGTERM)


@pytest.fixture
def own_server() -> Iterator[Quotad]:
    """A quotad of this test's own, to stop and restart."""
    q = Quotad().start()
    yield q
    q.stop()


def fresh(kind: str) -> str:
    """A resource name no other test uses (every test resource is a glob)."""
    return f"py.{kind}.{uuid.uuid4().hex[:12]}"
