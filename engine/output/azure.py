"""One Azure Blob (or ADLS Gen2) container prefix: the `store.Store` that az:// and abfs:// name.

Through azure-storage-blob's async client (azure.storage.blob.aio, on aiohttp like the rest of
the engine), imported only for such an out_dir. A file's parts are blocks staged on its staging
blob (Put Block, streamed from the local part with its MD5, which the service checks); block ids are deterministic and
name the part and its offset, so a fresh pod lists the uncommitted blocks (Get Block List,
blocklisttype=uncommitted; the service keeps them for 7 days) and knows which bytes it holds.
Put Block List commits them into the staging blob; after the checks, a server-side copy makes the
final blob, with its digest and rows as metadata, appear whole: Copy Blob From URL (synchronous,
up to 256 MiB), else the ranges staged on the final blob (Put Block From URL) and one Put Block List.

Failures are translated once here, like S3's: a missing container is a configuration error
(exit 2), refused credentials exit 3, an endpoint that cannot be reached exit 4 (after the
gateway's budget, engine/reach.py), anything else (after the client's own retries) a StoreError.
"""

from __future__ import annotations

# The `azure` namespace comes from the azure-storage-blob and azure-identity distributions
# ([project] dependencies in pyproject.toml); imported inside functions, only for az:// / abfs://.
import datetime
import hashlib
import io
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.to_thread

from ..config import StoreSettings, StoreURL
from ..errors import ConfigError, CredentialsRejected, StoreError
from ..masking import register_secret
from ..reach import CONNECT_FAILURES, connecting
from ..retry import MAX_ATTEMPTS, RetryPolicy
from .azure_access import AzureAccess, client_credential, resolve_access
from .store import Part, Prefixed, Upload, quoted

T = TypeVar("T")
SYNC_COPY_LIMIT = 256 << 20  # Copy Blob From URL's largest source
COPY_BLOCK = 1 << 30  # larger objects: staged on the final blob in ranges of this (Put Block From URL takes 4000 MiB)
READ_CHUNK = 4 << 20  # a read holds this much at a time (the client's default first GET is 32 MiB)
_BLOCK_ID = re.compile(r"aep-(\d{5})-(\d{16})")
_REFUSED = {"AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch", "InvalidAuthenticationInfo",
            "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch",
            "AuthorizationServiceMismatch", "KeyBasedAuthenticationNotPermitted", "NoAuthenticationInformation"}
_NO_CONTAINER = {"ContainerNotFound", "ContainerBeingDeleted"}
_FOLDER = "hdi_isfolder"  # an ADLS Gen2 (hierarchical namespace) directory, listed as an empty blob


def block_id(number: int, offset: int) -> str:
    """The id of part `number`, which starts at `offset` (the same on every pod: a rerun stages
    the same block again rather than a second one, and reads back where a staged block belongs)."""
    return f"aep-{number:05d}-{offset:016d}"


def to_azure(metadata: dict[str, str] | None) -> dict[str, str]:
    """Azure metadata names are C# identifiers: our `aep-export-sha256` is stored as `aep_export_sha256`."""
    return {k.replace("-", "_"): v for k, v in (metadata or {}).items()}


def from_azure(metadata: dict[str, str] | None) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in (metadata or {}).items()}


class Container(Prefixed):
    """A `store.Store` on Azure Blob Storage. Keys are relative to the URL's prefix."""

    def __init__(self, url: StoreURL, client: Any, access: AzureAccess, credential: Any = None):
        super().__init__(url)
        self.client, self.access, self.credential = client, access, credential
        self.multipart = Blocks(self)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: StoreURL, store: StoreSettings | None = None, *, connections: int = 32,
                      attempts: int = MAX_ATTEMPTS) -> AsyncIterator[Container]:
        """A client for the URL's container, checked before anything is attempted (container, credentials)."""
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.storage.blob.aio import ContainerClient

        access = resolve_access(url, store)
        async with AsyncExitStack() as stack:
            credential = client_credential(access)
            if access.uses_identity:
                stack.push_async_callback(credential.close)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)))

            def client(retries: int) -> Any:
                transport = AioHttpTransport(session=session, session_owner=False)
                return ContainerClient(access.endpoint, url.bucket, credential=credential, transport=transport,
                                       retry_total=retries, connection_timeout=30, read_timeout=120,
                                       max_single_get_size=READ_CHUNK, max_chunk_get_size=READ_CHUNK)

            async with client(0) as probe:
                await cls(url, probe, access).preflight()
            async with client(max(0, attempts - 1)) as main:
                yield cls(url, main, access, credential)

    async def preflight(self) -> None:
        """One listing: the endpoint answers, the container exists and the credentials are accepted
        (made without the client's retries: an endpoint that refuses connections is retried like
        the gateway, for the same budget, then stops the run with exit 4)."""
        await connecting(self._first_listing, target=f"the Azure Blob service at {self.access.endpoint}",
                         setting="the account (AZURE_STORAGE_ACCOUNT_NAME, or the connection string's BlobEndpoint)",
                         policy=RetryPolicy())

    async def _first_listing(self) -> None:
        try:
            async for _ in self.client.list_blobs(name_starts_with=self.key(""), results_per_page=1).by_page():
                break
        except Exception as exc:
            cause = getattr(exc, "inner_exception", None)  # azure-core wraps aiohttp's connection errors
            if isinstance(cause, CONNECT_FAILURES):
                raise cause from exc
            raise translate(exc, "check the container", self.url) from None

    def blob(self, rel: str) -> Any:
        return self.client.get_blob_client(self.key(rel))

    async def request(self, what: str, op: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kw: Any) -> T:
        """One call on this container, its failure translated."""
        try:
            return await op(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - azure-core's errors and aiohttp's; translate() maps them
            raise translate(exc, what, self.url) from None

    # -- objects --------------------------------------------------------------------------------

    async def list(self, rel_prefix: str) -> AsyncIterator[tuple[str, int]]:
        """(rel, size) of every committed blob under the prefix (ADLS Gen2's directories left out)."""
        try:
            async for item in self.client.list_blobs(name_starts_with=self.key(rel_prefix), include=["metadata"]):
                if (item.metadata or {}).get(_FOLDER) != "true":
                    yield self.rel(item.name), item.size
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            raise translate(exc, f"list {rel_prefix or '/'}", self.url) from None

    async def metadata(self, rel: str) -> dict[str, str] | None:
        try:
            props = await self.blob(rel).get_blob_properties()
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            if _missing(exc):
                return None
            raise translate(exc, f"read {rel}", self.url) from None
        return from_azure(props.metadata)

    async def read(self, rel: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        if end is not None and end <= start:
            return
        try:
            stream = await self.blob(rel).download_blob(offset=start, length=None if end is None else end - start)
            async for chunk in stream.chunks():
                yield chunk
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            raise translate(exc, f"read {rel}", self.url) from None

    async def read_text(self, rel: str) -> str | None:
        try:
            stream = await self.blob(rel).download_blob()
            data: bytes = await stream.readall()
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            if _missing(exc):
                return None
            raise translate(exc, f"read {rel}", self.url) from None

    async def put(self, rel: str, body: bytes | io.RawIOBase, length: int, sha256: bytes,
                  metadata: dict[str, str] | None = None) -> None:
        """One Put Blob (its MD5 checked by the service; blocks and one commit past 64 MiB): the blob appears whole."""
        await self.request(f"write {rel}", self.blob(rel).upload_blob, body, length=length, overwrite=True,
                           metadata=to_azure(metadata), validate_content=True, max_concurrency=1)

    async def delete(self, rel: str) -> None:
        try:
            await self.blob(rel).delete_blob()
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            if not _missing(exc):
                raise translate(exc, f"delete {rel}", self.url) from None

    async def copy(self, src: str, dst: str, size: int, metadata: dict[str, str]) -> str | None:
        """The final blob, made server-side from the staging blob, appears whole with its metadata.
        Azure computes no SHA-256 of a copy: None."""
        source, auth = await self._source(src)
        target = self.blob(dst)
        if size <= SYNC_COPY_LIMIT:
            await self.request(f"copy {src} to {dst}", target.start_copy_from_url, source, metadata=to_azure(metadata),
                               requires_sync=True, **auth)
            return None
        from azure.storage.blob import BlobBlock

        ids = []
        for n, start in enumerate(range(0, size, COPY_BLOCK), start=1):
            ids.append(block_id(n, start))
            await self.request(f"copy {src} to {dst}", target.stage_block_from_url, ids[-1], source, source_offset=start,
                               source_length=min(COPY_BLOCK, size - start), **auth)
        await self.request(f"commit {dst}", target.commit_block_list, [BlobBlock(block_id=i) for i in ids],
                           metadata=to_azure(metadata))
        return None

    async def _source(self, rel: str) -> tuple[str, dict[str, str]]:
        """The staging blob's URL as a copy source, with what authorizes reading it (a copy from a
        URL does not inherit the caller's Shared Key): a short-lived read-only SAS, the SAS in use,
        or the identity's bearer token."""
        url = self.blob(rel).url
        if self.access.key:
            from azure.storage.blob import BlobSasPermissions, generate_blob_sas

            expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            sas = generate_blob_sas(self.access.account, self.url.bucket, self.key(rel), account_key=self.access.key,
                                    permission=BlobSasPermissions(read=True), expiry=expiry)
            register_secret(sas)
            return f"{url}?{sas}", {}
        if self.access.sas:
            return f"{url}?{self.access.sas}", {}
        token = await self.credential.get_token("https://storage.azure.com/.default")
        register_secret(token.token)
        return url, {"source_authorization": f"Bearer {token.token}"}


class Blocks:
    """A `store.Multipart` on Azure: a staging blob's uncommitted blocks. There is no upload
    handle; a blob with uncommitted blocks and no committed content is an upload in progress."""

    HANDLE = "blocks"

    def __init__(self, container: Container):
        self.container = container

    async def create(self, rel: str) -> str:
        return self.HANDLE

    async def upload_part(self, rel: str, upload_id: str, number: int, body: io.RawIOBase, length: int,
                          sha256: bytes, *, offset: int) -> Part:
        ident = block_id(number, offset)
        md5 = await anyio.to_thread.run_sync(_md5_of, body, length)  # read from local disk, not held in memory
        body.seek(0)
        await self.container.request(f"upload part {number} of {rel}", self.container.blob(rel).stage_block, ident, body,
                                     length=length, transactional_content_md5=md5)  # the service refuses other bytes
        return Part(number, length, ident, None)

    async def in_progress(self, rel_prefix: str) -> list[Upload]:
        client, prefix = self.container.client, self.container.key(rel_prefix)
        try:
            every = {b.name async for b in client.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])}
            committed = {b.name async for b in client.list_blobs(name_starts_with=prefix)}
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            raise translate(exc, f"list uploads under {rel_prefix}", self.container.url) from None
        return [Upload(self.container.rel(name), self.HANDLE) for name in sorted(every - committed)]

    async def list_parts(self, rel: str, upload_id: str) -> list[Part] | None:
        try:
            _, uncommitted = await self.container.blob(rel).get_block_list("uncommitted")
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            if _missing(exc):
                return None
            raise translate(exc, f"list the parts of {rel}", self.container.url) from None
        parts = []
        for block in uncommitted:
            match = _BLOCK_ID.fullmatch(block.id or "")
            if match:  # anything else is not ours: never committed, the service drops it after 7 days
                parts.append(Part(int(match[1]), block.size, block.id, None))
        return parts

    async def complete(self, rel: str, upload_id: str, parts: list[Part]) -> None:
        from azure.storage.blob import BlobBlock

        blocks = [BlobBlock(block_id=p.etag) for p in sorted(parts, key=lambda p: p.number)]
        await self.container.request(f"complete {rel}", self.container.blob(rel).commit_block_list, blocks)

    async def abort(self, rel: str, upload_id: str) -> None:
        """Uncommitted blocks cannot be deleted one by one: an empty commit drops them, then the
        empty blob goes. A blob with committed content is left alone (it is a staging object)."""
        blob = self.container.blob(rel)
        try:
            committed, _ = await blob.get_block_list("all")
            if committed:
                return
            await blob.commit_block_list([])
            await blob.delete_blob()
        except Exception as exc:  # noqa: BLE001 - azure-core's errors; translate() maps them
            if not _missing(exc):
                raise translate(exc, f"abort the upload of {rel}", self.container.url) from None


def _md5_of(body: io.RawIOBase, length: int) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    left = length
    while left > 0:
        chunk = body.read(min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.digest()


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _missing(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 404 and _code(exc) not in _NO_CONTAINER


def translate(exc: BaseException, what: str, url: StoreURL) -> Exception:
    """An azure-core failure as the engine's errors (messages name the operation, never a secret)."""
    from azure.core.exceptions import ClientAuthenticationError

    code, status = _code(exc), getattr(exc, "status_code", None)
    if type(exc).__name__ == "CredentialUnavailableError":  # DefaultAzureCredential found no identity at all
        return ConfigError(f"no credentials for {url}: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME "
                           "with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (or the [store] azure_* settings), "
                           "or run with a workload or managed identity")
    if code in _NO_CONTAINER:
        return ConfigError(f"the container of {url} does not exist (or is not visible with these credentials)")
    if code in _REFUSED or status == 403 or isinstance(exc, ClientAuthenticationError):
        return CredentialsRejected(f"the object store refused the credentials for {url} ({code or status or type(exc).__name__}) "
                                   f"while trying to {what}")
    if code or status:
        message = quoted(getattr(exc, "reason", "") or "", 200)
        return StoreError(f"{url}: could not {what}: {code or status} {message}".rstrip())
    return StoreError(f"{url}: could not {what}: {type(exc).__name__}: {quoted(exc, 300)}")
