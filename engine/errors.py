"""Exception hierarchy, so callers can catch failures by meaning (httpx-style).

ExportError
├── ConfigError              bad or missing configuration: exit 2, nothing attempted
├── CredentialsRejected      IMS or the gateway refused our credentials: exit 3
├── PlatformUnreachable      the gateway or IMS cannot be reached (refused, DNS, TLS): exit 4
├── PlatformError            the platform answered with an error status
│   ├── NotFound             404: unknown dataset, batch or file
│   └── RetryableStatus      429/5xx: worth another try (Throttled for 429/503)
│       └── Throttled
├── TransferError            the connection failed or the body was cut short: retryable
├── FileChanged              the server's file is not the one we started: start it over
├── NotYet                   a polled state is not reached yet (export job, batch): poll again
├── IntegrityError           bytes on disk do not match what the platform promised
├── DiskFull                 the output volume is full: the run stops, partial work is kept
├── StoreError               the object store failed an operation (after its client's own retries)
└── UnsafeNameError          a server-sent name would escape the output directory

Each class has a `kind`: the short, stable word the `--json` documents give with an error's text
(README, "JSON results"); `Failure` is an error message that carries its kind.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base of every error aep-export raises on purpose."""

    kind = "error"


class ConfigError(ExportError):
    """Configuration is missing or invalid; nothing has been attempted."""

    kind = "config"


class CredentialsRejected(ExportError):
    """IMS or the gateway refused the credentials (never includes the secret itself)."""

    kind = "credentials"


class PlatformUnreachable(ExportError):
    """No connection to the gateway or IMS could be made for a while: nothing else can succeed.

    Not a TransferError on purpose: the connection attempts were already retried for a bounded
    time (engine/platform/reach.py), so callers stop instead of retrying again.
    """

    kind = "unreachable"


class PlatformError(ExportError):
    """The platform answered with an HTTP error status."""

    kind = "platform"

    def __init__(self, status: int, message: str, *, error_code: str | None = None, url: str = ""):
        self.status = status
        self.error_code = error_code
        self.url = url
        code = f" {error_code}" if error_code else ""
        super().__init__(f"HTTP {status}{code}: {message}" + (f" ({url})" if url else ""))


class NotFound(PlatformError):
    """404: the dataset, batch or file does not exist (or is not visible to us)."""

    kind = "not_found"


class RetryableStatus(PlatformError):
    """A status worth retrying (500, 502, 503, 504, 429)."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(status, message, **kw)
        self.retry_after = retry_after


class Throttled(RetryableStatus):
    """429 or 503: the gateway asks us to slow down; the whole pool backs off."""


class TransferError(ExportError):
    """Connection reset, timeout or a body shorter than announced: retry/resume."""

    kind = "transfer"


class FileChanged(ExportError):
    """The total size changed, or the server sent more bytes than the file has: start over."""

    kind = "file_changed"


class NotYet(ExportError):
    """What we wait for (an export job, a batch) is not ready yet; the retry loop polls again."""

    kind = "not_ready"


class IntegrityError(ExportError):
    """Downloaded bytes fail a check (size, digest, parquet footer, record count)."""

    kind = "integrity"


class DiskFull(ExportError):
    """No space left in the output directory; .part files are kept so a rerun resumes."""

    kind = "disk_full"


class UnsafeNameError(ExportError):
    """A name sent by the server would write outside the output directory."""

    kind = "unsafe_name"


class StoreError(ExportError):
    """The object store failed an operation after its client's own retries; uploaded parts are kept."""

    kind = "store"


def kind_of(exc: BaseException) -> str:
    """The `kind` of an error: its class's for ours, "os" for the system's, "internal" for a bug."""
    if isinstance(exc, ExportError):
        return exc.kind
    return "os" if isinstance(exc, OSError) else "internal"


class Failure(str):
    """An error message that knows its kind: a plain str to everything else (report.json, the
    summary table), `{"kind", "message"}` in a --json document."""

    kind: str

    def __new__(cls, kind: str, message: str) -> Failure:
        self = super().__new__(cls, message)
        self.kind = kind
        return self

    def __reduce__(self) -> tuple[type[Failure], tuple[str, str]]:  # copy and pickle keep the kind
        return Failure, (self.kind, str(self))
