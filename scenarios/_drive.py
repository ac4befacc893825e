"""Driving peer processes, cutting links, and starting moto: the scenarios' machinery."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import anyio
from anyio.abc import ByteReceiveStream, Process

ROOT = Path(__file__).resolve().parent.parent


class PeerProcess:
    """A ``scenarios._peer`` child process and its JSON-lines conversation."""

    def __init__(self, name: str, process: Process) -> None:
        self.name = name
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, name: str, log: Path | None = None) -> PeerProcess:
        """Start a peer process; its stderr goes to ``log`` (a file) if given."""
        err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: ASYNC230
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "scenarios._peer"], cwd=ROOT, stderr=err
            )
        finally:
            if log is not None:
                err.close()  # type: ignore[union-attr]
        return cls(name, process)

    async def _line(self) -> bytes:
        stdout = self.process.stdout
        assert isinstance(stdout, ByteReceiveStream)
        while b"\n" not in self._buffer:
            chunk = await stdout.receive()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def call(self, op: str, within: float = 120.0, **args: Any) -> Any:
        """Send one command and return its answer; raise on an error answer."""
        stdin = self.process.stdin
        assert stdin is not None
        with anyio.fail_after(within):
            await stdin.send((json.dumps({"op": op, **args}) + "\n").encode())
            answer = json.loads(await self._line())
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {op} failed: {answer['error']}")
        return answer["ok"]

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                stdin = self.process.stdin
                assert stdin is not None
                await stdin.send(b'{"op": "exit"}\n')
                with anyio.fail_after(10):
                    await self.process.wait()
            except Exception:
                self.process.kill()
                await self.process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_http(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except OSError:
        return False


#: what moto and the S3 client need in the environment (fake credentials, no real AWS)
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto(log: IO[bytes], start_timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto.server`` on 127.0.0.1 and a free port (retrying if the port was taken
    meanwhile); returns the process and its endpoint once it answers HTTP."""
    failure = ""
    for _ in range(3):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,  # a file, not a pipe: moto logs every request and a full pipe blocks it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                failure = f"moto server exited with status {process.returncode}"
                break
            if _answers_http(endpoint):
                return process, endpoint
            time.sleep(0.1)
        else:
            failure = f"moto server did not answer HTTP on {endpoint} within {start_timeout} s"
            stop_process(process)
            break
    raise RuntimeError(failure)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
