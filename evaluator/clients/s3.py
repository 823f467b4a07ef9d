"""S3 access shared by the s3:// policy source, the s3:// output and the webhook service: one client factory
with boto3's own retries, and botocore errors turned into one-line messages that say what to do.

Credentials come from boto3's standard chain (env, profile, IRSA web identity on EKS); boto3 itself
honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, so MinIO, moto or any S3-compatible store just works.

Retries are boto3's, never a loop of ours: `RETRIES` (botocore's standard mode: throttling, 5xx and
connection errors, with backoff) for every call, and `TRANSFER` for downloads, whose managed transfer also
retries a body cut off mid-stream. What still fails is classified by `s3_errors`: an endpoint that cannot be
reached or keeps failing is `ServiceUnavailable` (exit 3); a missing bucket or object, denied access or missing
credentials is a `UsageError` (exit 2 while listing; while fetching, that checkpoint's error).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded

from evaluator.secrets import redact_text, redact_url
from sim.errors import ServiceUnavailable, UsageError, first_line

RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
"""botocore's standard retry mode retries throttling, 5xx and connection errors with backoff."""
TRANSFER = TransferConfig(num_download_attempts=3)
"""s3transfer retries a download whose body was cut off (connection reset, read timeout) this many times."""
OUTAGE_CODES = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"}
)
"""Error codes that mean S3 itself failed (after the retries), not the request."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise UsageError(f"malformed S3 URI {uri!r}; expected s3://bucket/key or s3://bucket/prefix/")
    return S3Location(bucket, key)


def client():
    return boto3.client("s3", config=RETRIES)


def download(s3, location: S3Location) -> bytes:
    """One object's bytes through boto3's managed transfer (it retries a body cut off mid-stream)."""
    buffer = io.BytesIO()
    with s3_errors(location.uri):
        s3.download_fileobj(location.bucket, location.key, buffer, Config=TRANSFER)
    return buffer.getvalue()


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Translate botocore failures on `what` (e.g. 's3://b/k', or 's3://b' for bucket calls) into one-line
    UsageErrors or ServiceUnavailable. boto3's managed uploads wrap the ClientError in S3UploadFailedError:
    unwrap it."""
    try:
        try:
            yield
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError | BotoCoreError):
                raise cause from None
            raise UsageError(f"S3 upload to {what} failed: {first_line(exc)}") from None
    except NoCredentialsError:
        raise UsageError(
            f"no AWS credentials for {what}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        ) from None
    except EndpointConnectionError as exc:
        url = urlsplit(str(exc.kwargs.get("endpoint_url", "")))
        endpoint = redact_url(f"{url.scheme}://{url.netloc}")  # an endpoint's userinfo may hold a password
        raise ServiceUnavailable(
            f"cannot reach the S3 endpoint for {what} ({endpoint}); check AWS_ENDPOINT_URL, or retry when it is up"
        ) from None
    except (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError) as exc:
        reason = redact_text(first_line(exc))  # botocore names the URL it failed on
        raise ServiceUnavailable(f"the connection to S3 failed during {what}: {reason}; retry") from None
    except (RetriesExceededError, TransferRetriesExceeded) as exc:  # a download cut off on every attempt
        cause = first_line(exc.last_exception) if exc.last_exception else first_line(exc)
        raise ServiceUnavailable(f"the download of {what} kept breaking off ({cause}); retry") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in OUTAGE_CODES:
            raise ServiceUnavailable(f"S3 is failing ({code}) for {what}; retry later") from None
        raise UsageError(_client_error_message(code, what)) from None
    except BotoCoreError as exc:
        raise UsageError(f"S3 request for {what} failed: {first_line(exc)}") from None


def _client_error_message(code: str, what: str) -> str:
    bucket_only = "/" not in what.removeprefix("s3://")
    if code == "NoSuchBucket" or (bucket_only and code in ("404", "NotFound")):
        return f"S3 bucket of {what} does not exist"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"S3 object {what} does not exist"
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access to {what} denied ({code}); check the AWS credentials and the bucket policy"
    return f"S3 request for {what} failed with {code or 'an unknown error'}"
