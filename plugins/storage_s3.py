"""Storage in an S3 bucket (AWS, MinIO or any S3-compatible store)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.plugin_api import (
    ObjectNotFound,
    StorageBackend,
    StorageUnavailable,
    StoredObject,
    validate_key,
    validate_prefix,
)

# S3 signature version 4 caps presigned URLs at seven days.
MAX_EXPIRES_IN = 7 * 24 * 3600
# `open` keeps objects up to this size in memory, larger ones in a temporary file.
_SPOOL_BYTES = 8 * 1024 * 1024
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True


def _check_expires_in(expires_in: int) -> int:
    if not isinstance(expires_in, int) or not 0 < expires_in <= MAX_EXPIRES_IN:
        raise ValueError(f"expires_in must be 1..{MAX_EXPIRES_IN} seconds, got {expires_in!r}")
    return expires_in


class S3Storage(StorageBackend):
    """Objects in the bucket `S3_BUCKET`, each key stored under `S3_PREFIX` (default none).

    Settings: `S3_BUCKET` (required), `S3_PREFIX`, `S3_REGION`, `S3_ENDPOINT_URL` (MinIO and
    other S3-compatible stores; path-style addressing unless `S3_ADDRESSING_STYLE` says
    otherwise), `S3_MAX_ATTEMPTS` (attempts per request, botocore "standard" retries),
    `S3_CONNECT_TIMEOUT`, `S3_READ_TIMEOUT`. Credentials come from the standard AWS chain
    (environment, shared files, instance role) unless `S3_ACCESS_KEY_ID` and
    `S3_SECRET_ACCESS_KEY` are set.

    - `save` uploads with the content type; an S3 PUT (or a completed multipart upload) is
      atomic, so readers see the old object or the new one; a failed multipart upload is
      aborted.
    - `open` downloads the object into a spooled temporary file (memory, then disk) and returns
      it rewound; raises `ObjectNotFound` for a missing key.
    - `url` is a presigned GET; `presign_upload` a presigned form POST limited to one content
      type and 1..max_bytes bytes.
    - `remove_abandoned` aborts the multipart uploads under the prefix begun before the cutoff:
      a writer killed mid-upload leaves its parts stored (and billed) but no object. (A bucket
      lifecycle rule, AbortIncompleteMultipartUpload, does the same on AWS.)
    - `list_objects` lists the bucket under the prefix (ListObjectsV2, a page at a time).
    - `check` is a HEAD on the bucket. (`exists` cannot tell a missing bucket from a missing
      object, since S3 answers a HEAD with a bare 404; `check` and every other method can.)
    - Connection failures, timeouts, throttling and 5xx answers that outlast the retries, as
      well as refused credentials or a missing bucket, raise `StorageUnavailable`.
    """

    name = "s3"

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        bucket = config.get("S3_BUCKET")
        if not bucket:
            raise ValueError(
                "S3_BUCKET is not set: the s3 storage backend needs the name of a bucket "
                "(and S3_ENDPOINT_URL for a store other than AWS)"
            )
        self.bucket = str(bucket)
        prefix = str(config.get("S3_PREFIX") or "").strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError:
                raise ValueError(f"S3_PREFIX {prefix!r} is not a valid key prefix") from None
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = config.get("S3_ENDPOINT_URL") or None
        max_attempts = int(config.get("S3_MAX_ATTEMPTS") or 3)
        if max_attempts < 1:
            raise ValueError(f"S3_MAX_ATTEMPTS must be at least 1, got {max_attempts}")
        addressing = config.get("S3_ADDRESSING_STYLE") or ("path" if self.endpoint_url else "auto")
        boto_config = BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts every
            # request, like AWS_MAX_ATTEMPTS.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=float(config.get("S3_CONNECT_TIMEOUT") or 5),
            read_timeout=float(config.get("S3_READ_TIMEOUT") or 60),
        )
        # A session per backend: boto3's default session is not safe to share across threads.
        session = boto3.session.Session(
            aws_access_key_id=config.get("S3_ACCESS_KEY_ID") or None,
            aws_secret_access_key=config.get("S3_SECRET_ACCESS_KEY") or None,
            region_name=config.get("S3_REGION") or None,
        )
        self.client = session.client("s3", endpoint_url=self.endpoint_url, config=boto_config)
        self.transfer_config = TransferConfig(max_concurrency=4)

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _unavailable(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore failures into StorageUnavailable with a message naming what failed."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            where = f"bucket {self.bucket!r}"
            if self.endpoint_url:
                where += f" at {self.endpoint_url}"
            what = f"{action} {key!r}" if key else action
            detail = str(exc)
            if isinstance(exc, ClientError):
                attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                detail = f"HTTP {status} after {attempts} attempt(s): {exc}"
            message = f"S3 storage unavailable: {what} in {where}: {detail}"
            raise StorageUnavailable(message) from exc

    def save(self, key: str, fileobj: BinaryIO, content_type: str) -> None:
        """Upload the whole stream under `key`, replacing any existing object."""
        s3_key = self._key(key)
        with self._unavailable("save", key):
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                s3_key,
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer_config,
            )

    def open(self, key: str) -> BinaryIO:
        """Download the object into a rewound temporary file; raise ObjectNotFound if absent."""
        s3_key = self._key(key)
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - returned
        try:
            with self._unavailable("open", key):
                try:
                    response = self.client.get_object(Bucket=self.bucket, Key=s3_key)
                except ClientError as exc:
                    if _error_code(exc) in _MISSING_CODES:
                        raise ObjectNotFound(key) from exc
                    raise
                with contextlib.closing(response["Body"]) as body:
                    shutil.copyfileobj(body, spool, 1024 * 1024)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        """Remove the object; S3 treats deleting a missing key as success."""
        s3_key = self._key(key)
        with self._unavailable("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=s3_key)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (a HEAD request)."""
        s3_key = self._key(key)
        with self._unavailable("look up", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=s3_key)
            except ClientError as exc:
                if _error_code(exc) in _MISSING_CODES:
                    return False
                raise
        return True

    def url(self, key: str, expires_in: int, content_disposition: str | None = None) -> str | None:
        """A presigned GET URL for the object, valid for `expires_in` seconds; S3 answers it
        with `content_disposition` (a signed response-content-disposition parameter)."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        _check_expires_in(expires_in)
        if content_disposition is not None:
            if any(c in content_disposition for c in "\r\n"):
                raise ValueError(f"invalid Content-Disposition: {content_disposition!r}")
            params["ResponseContentDisposition"] = content_disposition
        with self._unavailable("presign download of", key):
            return self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            )

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any] | None:
        """A presigned form POST for one object of `content_type`, 1..`max_bytes` bytes."""
        s3_key = self._key(key)
        _check_expires_in(expires_in)
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not content_type or any(c in content_type for c in "\r\n"):
            raise ValueError(f"invalid content type: {content_type!r}")
        with self._unavailable("presign upload of", key):
            post = self.client.generate_presigned_post(
                Bucket=self.bucket,
                Key=s3_key,
                Fields={"Content-Type": content_type},
                Conditions=[
                    ["content-length-range", 1, max_bytes],
                    {"Content-Type": content_type},
                ],
                ExpiresIn=expires_in,
            )
        return {"url": post["url"], "method": "POST", "fields": post["fields"]}

    def remove_abandoned(self, older_than: float) -> int:
        """Abort the multipart uploads under the prefix begun more than `older_than` seconds
        ago; return how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        removed = 0
        with self._unavailable("remove abandoned uploads"):
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] >= cutoff:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _error_code(exc) != "NoSuchUpload":  # finished or aborted meanwhile
                            raise
                        continue
                    removed += 1
        return removed

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every stored object under `prefix`, with its LastModified time."""
        validate_prefix(prefix)
        with self._unavailable("list", prefix or None):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if _is_key(key):  # not something else kept in the bucket
                        yield StoredObject(key, item["LastModified"].timestamp())

    def check(self) -> None:
        """HEAD the bucket; raise StorageUnavailable if it cannot be reached or used."""
        with self._unavailable("check"):
            self.client.head_bucket(Bucket=self.bucket)
