"""Session fixtures shared by every test package: a real moto S3 server over HTTP.

* ``moto_endpoint`` (session): starts ``python -m moto.server`` on 127.0.0.1 and a free port,
  waits until it answers HTTP, points the AWS SDK at fake credentials for the whole session (and
  away from any real config files), yields ``"http://127.0.0.1:PORT"``, stops the server.
* ``s3_url`` (function): a fresh, uniquely named bucket on that server, as a store URL
  ``s3://<bucket>/db?endpoint_url=<endpoint>&region=us-east-1``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO

import pytest

from scenarios._drive import start_moto, stop_process

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


def _start_moto(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    return start_moto(log, _START_TIMEOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process)


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
