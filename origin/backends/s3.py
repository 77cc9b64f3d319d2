"""The S3 origin through boto3: AWS S3, MinIO, Ceph RGW, any S3 API by `endpoint_url`.

Retries are botocore's (standard or adaptive mode, `max_attempts` per request): throttling (503
SlowDown), 5xx and connection errors are retried with jittered exponential backoff, per request, so
one slow part does not restart a file. Uploads go through one s3transfer TransferManager for the whole
batch: files above the threshold become multipart uploads whose parts run in parallel, `max_concurrency`
requests in flight across all files. A failed or cancelled multipart upload is aborted by s3transfer;
what a killed process left is found by `abort_incomplete` (ListMultipartUploads) on the next run.
"""
from __future__ import annotations

import threading
from typing import Iterator, Sequence

import boto3
from boto3.s3.transfer import ProgressCallbackInvoker, TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from origin.backends import HASH_METADATA, ObjectInfo, Progress, PutItem, Stats
from origin.config import Location, S3Config
from origin.core.errors import BackendError, ObjectNotFound

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Backend:
    def __init__(self, location: Location, cfg: S3Config) -> None:
        assert location.bucket is not None
        self.bucket, self.prefix, self.location = location.bucket, location.prefix, location
        self.stats = Stats()
        self._lock = threading.Lock()
        botocore_config = Config(
            retries={"mode": cfg.retry_mode, "max_attempts": cfg.max_attempts},
            max_pool_connections=max(10, cfg.max_concurrency + 2),
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            s3={"addressing_style": cfg.addressing_style},
        )
        session = boto3.session.Session()
        try:
            self.client = session.client("s3", endpoint_url=location.endpoint_url,
                                         region_name=location.region, config=botocore_config)
        except NoRegionError:
            self.client = session.client("s3", endpoint_url=location.endpoint_url,
                                         region_name="us-east-1", config=botocore_config)
        self.transfer = TransferConfig(
            multipart_threshold=cfg.multipart_threshold_bytes,
            multipart_chunksize=cfg.multipart_chunk_bytes,
            max_concurrency=cfg.max_concurrency,
            use_threads=True,
        )

    def describe(self) -> str:
        return str(self.location)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> BackendError:
        if isinstance(exc, NoCredentialsError):
            return BackendError("no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "?")
            if code == "NoSuchBucket":
                return BackendError(f"bucket {self.bucket!r} does not exist at {self.describe()}")
            if code in _NOT_FOUND:
                return ObjectNotFound(f"no object {key} in {self.describe()}")
            return BackendError(f"{action} {key} in {self.describe()}: {code}: {exc}")
        return BackendError(f"{action} {key} in {self.describe()}: {exc}")

    def put_files(self, items: Sequence[PutItem], progress: Progress | None = None) -> None:
        if not items:
            return
        subscribers = [ProgressCallbackInvoker(progress)] if progress is not None else None
        current = items[0].key
        try:
            with create_transfer_manager(self.client, self.transfer) as manager:
                futures = [(item, manager.upload(
                    str(item.path), self.bucket, self._key(item.key),
                    extra_args={"Metadata": {HASH_METADATA: item.xxh3}, "ContentType": item.content_type},
                    subscribers=subscribers)) for item in items]
                for item, future in futures:
                    current = item.key
                    future.result()  # the first failure leaves the with-block, which cancels the rest
                    with self._lock:
                        self.stats.puts += 1
                        self.stats.bytes_put += item.size
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("uploading", current, exc) from None

    def put_bytes(self, key: str, data: bytes, content_type: str, xxh3: str | None = None) -> None:
        metadata = {HASH_METADATA: xxh3} if xxh3 else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ContentType=content_type, Metadata=metadata)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("writing", key, exc) from None
        with self._lock:
            self.stats.puts += 1
            self.stats.bytes_put += len(data)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._fail("head", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("head", key, exc) from None
        return ObjectInfo(key, r["ContentLength"], r.get("Metadata", {}).get(HASH_METADATA), r["ETag"],
                          r["LastModified"].timestamp())

    def has(self, key: str, size: int, xxh3: str) -> bool:
        info = self.head(key)
        return info is not None and info.size == size and info.xxh3 == xxh3

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("reading", key, exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                       Range=f"bytes={offset}-{offset + length - 1}")
            return r["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("reading", key, exc) from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self._key(""))
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"][strip:], obj["Size"], None, obj["ETag"],
                                     obj["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing", prefix, exc) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("deleting", key, exc) from None

    def incomplete_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload under `prefix` that was never completed."""
        out = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                               Prefix=self._key(prefix))
            for page in pages:
                out += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ())]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing uploads", prefix, exc) from None
        return out

    def abort_incomplete(self, prefix: str) -> int:
        uploads = self.incomplete_uploads(prefix)
        for key, upload_id in uploads:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise self._fail("aborting upload of", key, exc) from None
        self.stats.aborted_uploads += len(uploads)
        return len(uploads)
