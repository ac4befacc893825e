"""Session fixtures shared by every test package: a real moto S3 server over HTTP.

* ``moto_endpoint`` (session): starts ``python -m moto.server`` on 127.0.0.1 and a free port,
  waits until it answers HTTP, points the AWS SDK at fake credentials for the whole session (and
  away from any real config files), yields ``"http://127.0.0.1:PORT"``, stops the server.
* ``s3_url`` (function): a fresh, uniquely named bucket on that server, as a store URL
  ``s3://<bucket>/db?endpoint_url=<endpoint>&region=us-east-1``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import IO

import pytest

_START_TIMEOUT = 60.0  # seconds for moto to import and bind (it is slow on a cold cache)

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never let a developer's real profile, session token or endpoint leak into the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_CLEARED_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


def _free_port() -> int:
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


def _start_moto(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto on a free port; retry on another port if the chosen one was taken meanwhile."""
    failure = ""
    for _ in range(3):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,  # a file, not a pipe: moto logs every request and a full pipe blocks it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                failure = f"moto server exited with status {process.returncode}"
                break
            if _answers_http(endpoint):
                return process, endpoint
            time.sleep(0.1)
        else:
            failure = f"moto server did not answer HTTP on {endpoint} within {_START_TIMEOUT} s"
            _stop(process)
            break
    raise RuntimeError(failure)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server running for the whole session."""
    with pytest.MonkeyPatch.context() as env, tempfile.TemporaryFile() as log:
        for name, value in _FAKE_AWS_ENV.items():
            env.setenv(name, value)
        for name in _CLEARED_AWS_ENV:
            env.delenv(name, raising=False)
        try:
            process, endpoint = _start_moto(log)
        except RuntimeError as exc:
            log.seek(0)
            output = log.read().decode(errors="replace")[-4000:]
            pytest.fail(f"cannot start the moto S3 server: {exc}\n--- its output ---\n{output}")
        try:
            yield endpoint
        finally:
            _stop(process)


@pytest.fixture
async def s3_url(moto_endpoint: str) -> str:
    """A store URL on a fresh, empty bucket of the session's moto server."""
    from aiobotocore.session import get_session

    bucket = f"replica-test-{uuid.uuid4().hex[:20]}"
    async with get_session().create_client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1"
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/db?endpoint_url={moto_endpoint}&region=us-east-1"
