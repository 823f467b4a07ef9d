"""S3 access shared by the s3:// policy source and the s3:// output: one client factory with retries,
and botocore errors turned into one-line messages that name the problem and the fix.

Credentials come from boto3's standard chain (env, profile, IRSA web identity on EKS); boto3 itself
honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, so MinIO, moto or any S3-compatible store just works.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from sim.errors import UsageError

RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
"""botocore's standard retry mode retries throttling, 5xx and connection errors with backoff."""


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


@contextmanager
def s3_errors(what: str):
    """Translate botocore failures on `what` (e.g. 's3://b/k', or 's3://b' for bucket calls) into one-line
    UsageErrors. boto3's managed uploads wrap the ClientError in S3UploadFailedError: unwrap it."""
    try:
        try:
            yield
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError | BotoCoreError):
                raise cause from None
            raise UsageError(f"S3 upload to {what} failed: {exc}") from None
    except NoCredentialsError:
        raise UsageError(
            f"no AWS credentials for {what}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        ) from None
    except EndpointConnectionError as exc:
        raise UsageError(
            f"cannot reach the S3 endpoint for {what} ({exc.kwargs.get('endpoint_url')}); check AWS_ENDPOINT_URL"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise UsageError(_client_error_message(code, what)) from None
    except BotoCoreError as exc:
        raise UsageError(f"S3 request for {what} failed: {exc}") from None


def _client_error_message(code: str, what: str) -> str:
    bucket_only = "/" not in what.removeprefix("s3://")
    if code == "NoSuchBucket" or (bucket_only and code in ("404", "NotFound")):
        return f"S3 bucket of {what} does not exist"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"S3 object {what} does not exist"
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access to {what} denied ({code}); check the AWS credentials and the bucket policy"
    return f"S3 request for {what} failed with {code or 'an unknown error'}"
