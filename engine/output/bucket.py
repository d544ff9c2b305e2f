"""One S3 bucket prefix through aiobotocore: the few operations object-storage output needs.

Why aiobotocore (`python -m bench.s3_libraries`): resuming across pods needs the multipart
upload's own handles (create, a numbered part with its SHA-256, list the parts there, list and
abort abandoned uploads, complete) and server-side copy. obstore hides them all behind `put`;
boto3 blocks a thread per request (an upload cannot be cancelled). aiobotocore runs on aiohttp.

Credentials, region and endpoint come from botocore's standard chain: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL(_S3), profiles, web
identity (EKS pod roles) and the container or instance role. Failures are translated once here:
a missing bucket is a configuration error (exit 2), refused credentials exit 3, an endpoint that
cannot be reached exit 4 (after the gateway's budget, engine/reach.py), anything else
(after botocore's own retries) is a StoreError.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..config import StoreURL
from ..errors import ConfigError, CredentialsRejected, StoreError
from ..masking import register_secret
from ..reach import CONNECT_FAILURES, connecting
from ..retry import MAX_ATTEMPTS, RetryPolicy
from .store import ObjectView as ObjectView  # re-exported: the checks' view of an object, any store
from .store import Part, Prefixed, Upload, b64, quoted

COPY_LIMIT = 5 << 30  # S3's largest single CopyObject; larger objects are copied part by part
COPY_PART = 1 << 30
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
            "TokenRefreshRequired", "InvalidClientTokenId", "AllAccessDisabled", "403"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


class Bucket(Prefixed):
    """A `store.Store` on S3. Keys are given relative to the URL's prefix (`rel`); full keys never
    leave this class."""

    def __init__(self, url: StoreURL, client: Any):
        super().__init__(url)
        self.name = url.bucket
        self.client = client
        self.multipart = Multipart(self)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: StoreURL, *, connections: int = 32, attempts: int = MAX_ATTEMPTS) -> AsyncIterator[Bucket]:
        """A client for the URL's bucket, checked before anything is attempted (bucket, credentials)."""
        # Imported here: aiobotocore is needed only for an s3:// out_dir (an optional extra's worth of start-up time)
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        session = get_session()
        config = AioConfig(retries={"mode": "standard", "max_attempts": attempts}, max_pool_connections=connections,
                           connect_timeout=30, read_timeout=120,
                           # every body we send carries its x-amz-checksum-sha256: no second hash to sign it
                           s3={"payload_signing_enabled": False})
        try:
            credentials = await session.get_credentials()
        except Exception as exc:  # noqa: BLE001 - a broken credential source (profile, role) is a configuration problem
            raise ConfigError(f"cannot load credentials for {url}: {type(exc).__name__}") from None
        if credentials is None:
            raise ConfigError(f"no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(and AWS_SESSION_TOKEN), a profile, or run with a pod/instance role")
        frozen = await credentials.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
        async with session.create_client("s3", config=config.merge(AioConfig(retries={"mode": "standard", "max_attempts": 1}))) as probe:
            await cls(url, probe).preflight()
        async with session.create_client("s3", config=config) as client:
            yield cls(url, client)

    async def preflight(self) -> None:
        """One listing: the endpoint answers, the bucket exists and the credentials are accepted.

        Made with a client that does not retry (botocore's own retries took a minute to give up
        on an endpoint that refuses connections): an endpoint that cannot be reached is retried
        like the gateway, for the same budget, then stops the run with exit 4 and one line."""
        endpoint = self.client.meta.endpoint_url
        await connecting(self._first_listing, target=f"the object store at {endpoint}",
                         setting="AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3, AWS_REGION)", policy=RetryPolicy())

    async def _first_listing(self) -> None:
        try:
            await self.client.list_objects_v2(Bucket=self.name, Prefix=self.key(""), MaxKeys=1)
        except Exception as exc:
            cause = getattr(exc, "kwargs", {}).get("error")  # botocore wraps aiohttp's connection errors
            if isinstance(cause, CONNECT_FAILURES):
                raise cause from exc
            raise translate(exc, "check the bucket", self.url) from None

    async def request(self, op: str, what: str, **kw: Any) -> Any:
        """One S3 call on this bucket, its failure translated."""
        try:
            return await getattr(self.client, op)(Bucket=self.name, **kw)
        except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
            raise translate(exc, what, self.url) from None

    # -- objects --------------------------------------------------------------------------------

    async def list(self, rel_prefix: str) -> AsyncIterator[tuple[str, int]]:
        """(rel, size) of every object under the prefix."""
        kw: dict[str, Any] = {"Prefix": self.key(rel_prefix)}
        while True:
            page = await self.request("list_objects_v2", f"list {rel_prefix or '/'}", **kw)
            for obj in page.get("Contents", []):
                yield self.rel(obj["Key"]), obj["Size"]
            if not page.get("IsTruncated"):
                return
            kw["ContinuationToken"] = page["NextContinuationToken"]

    async def head(self, rel: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self.client.head_object(Bucket=self.name, Key=self.key(rel))
            return head
        except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
            if _code(exc) in _MISSING:
                return None
            raise translate(exc, f"read {rel}", self.url) from None

    async def metadata(self, rel: str) -> dict[str, str] | None:
        head = await self.head(rel)
        return None if head is None else dict(head.get("Metadata") or {})

    async def read(self, rel: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of an object, as they arrive."""
        if end is not None and end <= start:
            return
        rng = f"bytes={start}-{'' if end is None else end - 1}"
        resp = await self.request("get_object", f"read {rel}", Key=self.key(rel), Range=rng)
        try:
            async with resp["Body"] as body:
                async for chunk in body.iter_chunks(1 << 20):
                    yield chunk
        except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
            raise translate(exc, f"read {rel}", self.url) from None

    async def read_text(self, rel: str) -> str | None:
        try:
            resp = await self.client.get_object(Bucket=self.name, Key=self.key(rel))
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
            if _code(exc) in _MISSING:
                return None
            raise translate(exc, f"read {rel}", self.url) from None

    async def put(self, rel: str, body: bytes | io.RawIOBase, length: int, sha256: bytes,
                  metadata: dict[str, str] | None = None) -> None:
        """One whole object; the store checks the body against its SHA-256 before it becomes visible."""
        await self.request("put_object", f"write {rel}", Key=self.key(rel), Body=body, ContentLength=length,
                         ChecksumSHA256=b64(sha256), Metadata=metadata or {})

    async def delete(self, rel: str) -> None:
        await self.request("delete_object", f"delete {rel}", Key=self.key(rel))

    async def copy(self, src: str, dst: str, size: int, metadata: dict[str, str]) -> str | None:
        """Server-side copy with new metadata; the new object appears whole. Returns the store's
        SHA-256 of the copy (base64) where it computes one for the whole object."""
        if size > COPY_LIMIT:
            await self._copy_in_parts(src, dst, size, metadata)
            return None  # a copy made of parts has no whole-object SHA-256 to compare
        resp = await self.request("copy_object", f"copy {src} to {dst}", Key=self.key(dst),
                                CopySource={"Bucket": self.name, "Key": self.key(src)},
                                MetadataDirective="REPLACE", Metadata=metadata, ChecksumAlgorithm="SHA256")
        sha256: str | None = resp.get("CopyObjectResult", {}).get("ChecksumSHA256")
        return sha256

    async def _copy_in_parts(self, src: str, dst: str, size: int, metadata: dict[str, str]) -> None:
        upload_id = await self.multipart.create(dst, metadata)
        try:
            parts = []
            for n, start in enumerate(range(0, size, COPY_PART), start=1):
                end = min(size, start + COPY_PART)
                resp = await self.request("upload_part_copy", f"copy {src} to {dst}", Key=self.key(dst), UploadId=upload_id,
                                        PartNumber=n, CopySource={"Bucket": self.name, "Key": self.key(src)},
                                        CopySourceRange=f"bytes={start}-{end - 1}")
                result = resp["CopyPartResult"]
                parts.append(Part(n, end - start, result["ETag"], result.get("ChecksumSHA256")))
            await self.multipart.complete(dst, upload_id, parts)
        except BaseException:
            await self.multipart.abort(dst, upload_id)
            raise

class Multipart:
    """A `store.Multipart` on S3: a bucket's multipart uploads, by S3's own handles: what lets an upload resume in another pod
    (its parts listed) and what a rerun cleans up (uploads listed, aborted)."""

    def __init__(self, bucket: Bucket):
        self.bucket = bucket

    async def create(self, rel: str, metadata: dict[str, str] | None = None) -> str:
        resp = await self.bucket.request("create_multipart_upload", f"start uploading {rel}", Key=self.bucket.key(rel),
                                         ChecksumAlgorithm="SHA256", Metadata=metadata or {})
        upload_id: str = resp["UploadId"]
        return upload_id

    async def upload_part(self, rel: str, upload_id: str, number: int, body: io.RawIOBase, length: int,
                          sha256: bytes, *, offset: int = 0) -> Part:
        resp = await self.bucket.request("upload_part", f"upload part {number} of {rel}", Key=self.bucket.key(rel), UploadId=upload_id,
                                         PartNumber=number, Body=body, ContentLength=length, ChecksumSHA256=b64(sha256))
        return Part(number, length, resp["ETag"], b64(sha256))

    async def in_progress(self, rel_prefix: str) -> list[Upload]:
        """The uploads started under the prefix and neither completed nor aborted."""
        found, kw = [], {"Prefix": self.bucket.key(rel_prefix)}
        while True:
            page = await self.bucket.request("list_multipart_uploads", f"list uploads under {rel_prefix}", **kw)
            found += [Upload(self.bucket.rel(u["Key"]), u["UploadId"]) for u in page.get("Uploads", [])]
            if not page.get("IsTruncated"):
                return found
            kw.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])

    async def list_parts(self, rel: str, upload_id: str) -> list[Part] | None:
        """The parts already uploaded, or None when the upload no longer exists."""
        parts, kw = [], {"Key": self.bucket.key(rel), "UploadId": upload_id}
        while True:
            try:
                page = await self.bucket.client.list_parts(Bucket=self.bucket.name, **kw)
            except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
                if _code(exc) == "NoSuchUpload":
                    return None
                raise translate(exc, f"list the parts of {rel}", self.bucket.url) from None
            parts += [Part(p["PartNumber"], p["Size"], p["ETag"], p.get("ChecksumSHA256")) for p in page.get("Parts", [])]
            if not page.get("IsTruncated"):
                return parts
            kw["PartNumberMarker"] = page["NextPartNumberMarker"]

    async def complete(self, rel: str, upload_id: str, parts: list[Part]) -> None:
        await self.bucket.request("complete_multipart_upload", f"complete {rel}", Key=self.bucket.key(rel), UploadId=upload_id,
                                  MultipartUpload={"Parts": [p.for_completion() for p in sorted(parts, key=lambda p: p.number)]})

    async def abort(self, rel: str, upload_id: str) -> None:
        try:
            await self.bucket.client.abort_multipart_upload(Bucket=self.bucket.name, Key=self.bucket.key(rel), UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - botocore's errors have no common base; translate() maps them
            if _code(exc) != "NoSuchUpload":
                raise translate(exc, f"abort the upload of {rel}", self.bucket.url) from None


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def translate(exc: BaseException, what: str, url: StoreURL) -> Exception:
    """A botocore failure as the engine's errors (messages name the operation, never a secret)."""
    code = _code(exc)
    if code == "NoSuchBucket":
        return ConfigError(f"the bucket of {url} does not exist (or is not visible with these credentials)")
    if code in _REFUSED:
        return CredentialsRejected(f"the object store refused the credentials for {url} ({code}) while trying to {what}")
    if code:
        message = quoted(exc.response.get("Error", {}).get("Message", ""), 200)  # type: ignore[attr-defined]
        return StoreError(f"{url}: could not {what}: {code} {message}".rstrip())
    return StoreError(f"{url}: could not {what}: {type(exc).__name__}: {quoted(exc, 300)}")
