"""Exception hierarchy, so callers can catch failures by meaning (httpx-style).

ExportError
├── ConfigError              bad or missing configuration: exit 2, nothing attempted
├── RunFatal                 ends the whole run, with its own exit code (engine/outcome.py)
│   ├── CredentialsRejected  IMS or the gateway refused our credentials: exit 3
│   ├── PlatformUnreachable  the gateway or IMS cannot be reached (refused, DNS, TLS): exit 4
│   ├── DiskFull             the output volume is full: the run stops, partial work is kept: exit 1
│   └── DestinationBusy      another run holds the output folder's lock: exit 5, nothing attempted
├── PlatformError            the platform answered with an error status
│   ├── NotFound             404: unknown dataset, batch or file
│   └── RetryableStatus      429/5xx: worth another try (Throttled for 429/503)
│       └── Throttled
├── TransferError            the connection failed, the body was cut short or too slow: retryable
│   └── UnusableBody         a body's first bytes fail a check (an HTML page for a parquet)
├── RequestLimit             a file used up its requests (export.max_file_requests): it fails alone
├── FileChanged              the server's file is not the one we started: start it over
├── NotYet                   a polled state is not reached yet (export job, batch): poll again
├── IntegrityError           bytes on disk do not match what the platform promised
├── FileWontFit              one file is larger than the free space: it fails alone
├── StoreError               the object store failed an operation (after its client's own retries)
└── UnsafeNameError          a server-sent name would escape the output directory

Each class has a `kind`: the short, stable word the `--json` documents give with an error's text
(README, "JSON results"); `Failure` is an error message that carries its kind.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from .masking import mask as _mask  # the one list of the run's secrets
from .outcome import EXIT_BUSY, EXIT_CREDENTIALS, EXIT_FAILED, EXIT_UNREACHABLE


class ExportError(Exception):
    """Base of every error aep-export raises on purpose."""

    kind = "error"


class ConfigError(ExportError):
    """Configuration is missing or invalid; nothing has been attempted."""

    kind = "config"


class RunFatal(ExportError):
    """Nothing else can succeed: the run stops, with this error's exit code and status.
    `except RunFatal` is how every layer lets one through (grep: `except RunFatal`)."""

    exit_code: ClassVar[int]
    status: ClassVar[str]  # the report's and the summary's run status
    label: ClassVar[str]  # the CLI's one line: "aep-export: {label}: {error}"
    typed: ClassVar[bool] = False  # the report names the error's type (describe) rather than its text alone


class CredentialsRejected(RunFatal):
    """IMS or the gateway refused the credentials (never includes the secret itself)."""

    kind = "credentials"
    exit_code, status, label, typed = EXIT_CREDENTIALS, "credentials_rejected", "credentials rejected", True


class PlatformUnreachable(RunFatal):
    """No connection to the gateway or IMS could be made for a while: nothing else can succeed.

    Not a TransferError on purpose: the connection attempts were already retried for a bounded
    time (engine/reach.py), so callers stop instead of retrying again.
    """

    kind = "unreachable"
    exit_code, status, label = EXIT_UNREACHABLE, "unreachable", "platform unreachable"


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

    def __init__(self, status: int, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(status, message, **kw)
        self.retry_after = retry_after


class Throttled(RetryableStatus):
    """429 or 503: the gateway asks us to slow down; the whole pool backs off."""


class TransferError(ExportError):
    """Connection reset, timeout or a body shorter than announced: retry/resume."""

    kind = "transfer"


class UnusableBody(TransferError):
    """The first bytes of a body fail a check (not parquet: an error page sent with a 200):
    a failed attempt, retried with back-off, and what came is quoted."""


class RequestLimit(ExportError):
    """A file cost the most requests it may (export.max_file_requests): it fails, the run goes on."""


class FileChanged(ExportError):
    """The total size changed, or the server sent more bytes than the file has: start over."""

    kind = "file_changed"


class NotYet(ExportError):
    """What we wait for (an export job, a batch) is not ready yet; the retry loop polls again."""

    kind = "not_ready"


class IntegrityError(ExportError):
    """Downloaded bytes fail a check (size, digest, parquet footer, record count)."""

    kind = "integrity"


class DiskFull(RunFatal):
    """No space left in the output directory; .part files are kept so a rerun resumes."""

    kind = "disk_full"
    exit_code, status, label = EXIT_FAILED, "disk_full", "disk full"


class FileWontFit(ExportError):
    """A file's listed size exceeds the free space before it starts: that file fails, the others
    go on (a listing may be wrong; a disk that fills up mid-write is DiskFull)."""

    kind = "wont_fit"


class DestinationBusy(RunFatal):
    """Another run holds the lock of the output folder (or of this shard): nothing is attempted."""

    kind = "busy"
    exit_code, status, label = EXIT_BUSY, "busy", ""  # its message names the other run


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
    """An error message that knows its kind: a plain str to everything else (_report.json, the
    summary table), `{"kind", "message"}` in a --json document."""

    kind: str

    def __new__(cls, kind: str, message: str) -> Failure:
        self = super().__new__(cls, message)
        self.kind = kind
        return self

    def __reduce__(self) -> tuple[type[Failure], tuple[str, str]]:  # copy and pickle keep the kind
        return Failure, (self.kind, str(self))


def excerpt(data: bytes | str, limit: int = 48, *, quote: bool = True) -> str:
    """What the platform sent, short and printable: control and non-ASCII bytes escaped
    (`'<!DOCTYPE html>\\n<html>'…`), quoted unless `quote` is false, never a secret the run knows."""
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else bytes(data)
    text = _mask(raw.decode("ascii", "backslashreplace"))  # masked whole: a cut never shows half a secret
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    cut = "…" if len(text) > limit else ""
    return f"'{shown}'{cut}" if quote else shown + cut


_PROBLEM_CODE = re.compile(r"[A-Z][A-Z0-9]*-\d+-\d{3}")  # http://ns.adobe.com/aep/errors/INSGHT-1000-400
_MESSAGE_LIMIT = 300


def error_fields(raw: bytes, reason: str = "") -> tuple[str | None, str]:
    """(error_code, message) of an error answer, whatever its body: the gateway's {error_code,
    message}, the problem shape {type, title, status, detail, report, error-chain}, IMS's {error,
    error_description}; anything else (an HTML page, nothing, invalid JSON, a JSON list or
    string, unknown keys) is quoted as it came, after the HTTP reason."""
    if not raw.strip():
        return None, f"{reason} (empty body)".strip()
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        body = None
    known = _documented_shape(body) if isinstance(body, dict) else None
    if known is None:
        quoted = excerpt(raw, 80)
        return None, f"{reason}: {quoted}" if reason else quoted
    code, message = (_as_text(v) for v in known)
    return (excerpt(code, 40, quote=False) if code else None,
            excerpt(message, _MESSAGE_LIMIT, quote=False) if message else reason)


def _as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def _documented_shape(body: dict[str, Any]) -> tuple[Any, Any] | None:
    if "error_code" in body or "message" in body:  # the gateway
        return body.get("error_code", body.get("code")), body.get("message")
    if {"title", "detail", "error-chain"} & body.keys():  # the problem shape of newer services
        chain = body.get("error-chain")
        link = chain[0] if isinstance(chain, list) and chain and isinstance(chain[0], dict) else {}
        match = _PROBLEM_CODE.search(str(body.get("type", "")))
        code = link.get("errorCode") or (match.group(0) if match else None)
        parts = [str(body[k]) for k in ("title", "detail") if body.get(k) not in (None, "")]
        return code, ": ".join(dict.fromkeys(parts))  # a detail equal to the title once
    if "error" in body:  # IMS
        return body.get("error"), body.get("error_description")
    return None
