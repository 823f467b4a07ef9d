"""moto's S3 server on 127.0.0.1 for tests: a bucket `policies` with checkpoints under `run/`, a bucket
`results`, and credentials pointed at it through the standard AWS variables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
import pytest
from moto import settings as moto_settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.server import ThreadedMotoServer

from tests.conftest import state_dict_bytes, tiny_model

SECRET = "s3cr3t-AWS-key-that-must-never-leak"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.client]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    client.create_bucket(Bucket="policies")
    client.create_bucket(Bucket="results")
    for seed, name in ((1, "ckpt_1.pt"), (2, "ckpt_2.pt"), (3, "ckpt_10.pt")):
        model, kwargs = tiny_model(seed)
        client.put_object(Bucket="policies", Key=f"run/{name}", Body=state_dict_bytes(model, kwargs))
    client.put_object(Bucket="policies", Key="run/notes.txt", Body=b"not a checkpoint")
    yield client
    server.stop()


@contextlib.contextmanager
def deny_after(requests: int):
    """Enforce authentication after `requests` more requests: our made-up access key then gets 403s."""
    ActionAuthenticatorMixin.request_count = 0
    previous, moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT, requests
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
