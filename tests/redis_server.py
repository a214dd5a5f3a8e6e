"""A throwaway `redis-server` for tests and benchmarks, and a counter of a client's round trips.

The server listens on 127.0.0.1 on a free port, with persistence off, and is stopped by its PID.
This module imports neither redis-py nor pytest at import time: the fixtures that use it must
be able to skip (or fail in CI) with a clear message when Redis is not there.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

__all__ = ["REDIS_SERVER", "RedisServer", "RoundTrips", "require_redis"]

REDIS_SERVER = "redis-server"


def require_redis() -> None:
    """Fail the test in CI (CI=true), else skip it, when Redis cannot run here."""
    import pytest

    reason = None
    if shutil.which(REDIS_SERVER) is None:
        reason = f"{REDIS_SERVER} is not on PATH"
    else:
        try:
            import redis  # noqa: F401
        except ImportError:
            reason = "redis-py is not installed (pip install redis)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must run the Redis backend's tests", pytrace=False)
    pytest.skip(f"{reason}: the Redis backend's tests need a local Redis")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` process: start, kill, hang, resume and restart it on the same port."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rls-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host]
        command += ["--save", "", "--appendonly", "no", "--dir", self._dir.name]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"{REDIS_SERVER} exited at once: {command}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{REDIS_SERVER} did not answer within {timeout} s")
            time.sleep(0.01)  # polling a starting process: real time is the point here

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _signal(self, number: signal.Signals) -> None:
        os.kill(self.pid, number)

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed server does."""
        self._signal(signal.SIGKILL)
        assert self._process is not None
        self._process.wait()
        self._process = None

    def hang(self) -> None:
        """Freeze (SIGSTOP): connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server by its PID (resumed first if hung); nothing if it is not running."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


class RoundTrips:
    """Counts what a redis-py client (sync or asyncio) sends: one per command or pipeline.

    `connects` counts connection attempts, so that "no network attempt" can be checked too.
    A sync client's open connections are dropped (the one held for script calls too) so that
    every request is seen; count an asyncio client from its creation.
    """

    def __init__(self, client: Any) -> None:
        self.sends = 0
        self.connects = 0
        pool = client.connection_pool
        base = pool.connection_class
        counter = self
        if inspect.iscoroutinefunction(base.send_packed_command):

            async def asend(connection: Any, *args: Any, **kwargs: Any) -> None:
                counter.sends += 1
                await base.send_packed_command(connection, *args, **kwargs)

            async def aconnect(connection: Any) -> None:
                counter.connects += 1
                await base.connect(connection)

            methods: dict[str, Any] = {"send_packed_command": asend, "connect": aconnect}
        else:

            def send(connection: Any, *args: Any, **kwargs: Any) -> None:
                counter.sends += 1
                base.send_packed_command(connection, *args, **kwargs)

            def connect(connection: Any) -> None:
                counter.connects += 1
                base.connect(connection)

            methods = {"send_packed_command": send, "connect": connect}
        pool.connection_class = type(f"Counting{base.__name__}", (base,), methods)
        if not inspect.iscoroutinefunction(pool.disconnect):
            from rate_limit_shield.backends.redis._connection import held_connection

            held = held_connection(client)
            if held is not None:
                held.close()  # the next script call takes a counted one from the pool
            pool.disconnect()
            pool.reset()  # forget the connections of the uncounted class

    def reset(self) -> None:
        self.sends = self.connects = 0


def processes() -> multiprocessing.context.ForkServerContext:
    """Processes forked from a clean server that has imported the backend: quick to start, and
    free of this process's threads."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["hypothesis", "pytest", "rate_limit_shield.backends.redis"])
    return context


def run_fleet(target: Callable[..., None], args: tuple[Any, ...], size: int) -> list[Any]:
    """Run `size` processes of `target(*args, start, results)`, released together by the
    barrier `start`; returns what each put on the queue `results`."""
    context = processes()
    start, results = context.Barrier(size), context.Queue()
    members = [context.Process(target=target, args=(*args, start, results)) for _ in range(size)]
    for member in members:
        member.start()
    try:
        return [results.get(timeout=120) for _ in members]
    finally:
        for member in members:
            member.join(timeout=30)
