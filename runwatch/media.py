"""Transports: putting a local media file where Runway can fetch it, and tidying up afterwards.

``s3``      boto3 upload to the configured bucket, then a SigV4 presigned GET URL (any S3-compatible store).
``runway``  Runway's own ephemeral upload: ``POST /v1/uploads``, then the presigned form POST; a ``runway://`` URI.
``data``    the file inline as a base64 ``data:`` URI, within Runway's caps on the URI's length.

Each ``place`` returns a :class:`Placed`: what goes in the request body, and what ``remove`` needs later.
The file is opened by :func:`runwatch.localmedia.open_media`, which refuses anything but the very file the
request check saw, and what is sent is read from that descriptor, whatever the name points to by then. Its
size is held to the transport's limits (:mod:`runwatch.medialimits`) once more, as it is now.
Everything foreign that can go wrong here (botocore, httpx, OSError, the API client's errors) leaves this
module as :class:`UploadError`; ``retryable`` says whether trying again later may succeed.

User-chosen names never reach storage: object keys and upload names are built from the request's field
path and the file's extension only.
"""

from __future__ import annotations

import base64
import math
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from runwatch.api import RunwayClient
from runwatch.errors import ApiConnectionError, ApiError, ApiStatusError, RateLimitedError, UploadError
from runwatch.localmedia import open_media
from runwatch.medialimits import (
    DATA_URI_CAPS,
    MAX_URL_LENGTH,
    TRANSPORTS,
    UPLOAD_MAX,
    UPLOAD_MIN,
    URL_CAPS,
    choose,
    data_uri_length,
    size_problem,
)

__all__ = [
    "DATA_URI_CAPS",
    "MAX_URL_LENGTH",
    "TRANSPORTS",
    "UPLOAD_MAX",
    "UPLOAD_MIN",
    "URL_CAPS",
    "DataTransport",
    "LocalMediaLike",
    "Placed",
    "RunwayTransport",
    "S3ConfigLike",
    "S3Transport",
    "Transport",
    "choose",
    "data_uri_length",
    "safe_filename",
]

MAX_PRESIGN_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer

_MEDIA_MAJOR = frozenset({"image", "video", "audio"})
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "video/ogg": ".ogv",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/webm": ".weba",
}
_SAFE_PART = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_XML_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9._-]{1,100})\s*</Code>")

# S3 error codes that another attempt may get past; every other code needs a person (credentials, bucket,
# policy). Statuses 5xx and 429 count as passing too, whatever the code.
_S3_PASSING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
_S3_HINTS = {
    "InvalidAccessKeyId": "the access key is not known to the store: check the S3 credentials",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check the S3 credentials",
    "AccessDenied": "the credentials lack permission for this bucket/prefix",
    "NoSuchBucket": "the bucket does not exist: create it or fix [s3] bucket",
    "ExpiredToken": "the session credentials have expired",
    "InvalidToken": "the session token is not valid",
    "RequestTimeTooSkewed": "this machine's clock is too far from the store's: fix the clock",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's: fix [s3] region",
    "PermanentRedirect": "the bucket is in another region or needs another endpoint: fix [s3] region/endpoint_url",
}


# -- what this module reads from its collaborators --------------------------------------------------


class S3ConfigLike(Protocol):
    """The parts of ``runwatch.config.S3Config`` this module reads."""

    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def presign_expiry(self) -> int: ...
    @property
    def keep(self) -> bool: ...
    @property
    def multipart_threshold(self) -> int: ...
    @property
    def multipart_chunksize(self) -> int: ...
    @property
    def addressing_style(self) -> str: ...


class LocalMediaLike(Protocol):
    """The parts of ``runwatch.request.LocalMedia`` this module reads (``root``, ``dev`` and ``ino`` say which
    file was checked, see :func:`runwatch.localmedia.open_media`)."""

    @property
    def field(self) -> tuple[str | int, ...]: ...
    @property
    def rel(self) -> str: ...
    @property
    def file(self) -> Path: ...
    @property
    def kind(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def root(self) -> Path: ...
    @property
    def dev(self) -> int: ...
    @property
    def ino(self) -> int: ...


@dataclass(frozen=True)
class Placed:
    """A media file put where Runway can fetch it."""

    uri: str  # what goes in the request body: presigned URL, runway:// URI or data: URI
    transport: str  # "s3" | "runway" | "data"
    handle: str | None  # the S3 key (for removal), the runway URI, None for data
    expires_at: float | None  # epoch seconds when ``uri`` stops working


class Transport(Protocol):
    """What the daemon holds: any of the three transports."""

    @property
    def name(self) -> str: ...
    def place(self, media: LocalMediaLike, job_id: str) -> Placed: ...
    def remove(self, placed: Placed) -> None: ...


# -- names ------------------------------------------------------------------------------------------


def safe_filename(media: LocalMediaLike) -> str:
    """A storage-safe name for ``media``: its field path, plus the extension of the user's file name.

    Only the extension is taken from the user's name (storage and Runway may look at it); an extension
    that is missing or odd is replaced by the one of the probed content type.
    """
    stem = _SAFE_PART.sub("-", "-".join(str(p) for p in media.field)).strip("-.")[:80] or "media"
    ext = media.file.suffix
    if not _SAFE_EXT.match(ext):
        ext = _EXTENSIONS.get(_base_type(media.content_type) or "", "")
    return stem + ext.lower()


def _base_type(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


def _specific_type(media: LocalMediaLike, transport: str) -> str:
    """The media's probed type, refusing what Runway refuses: none at all, or a generic one."""
    ctype = _base_type(media.content_type)
    major = ctype.split("/", 1)[0] if ctype and "/" in ctype else None
    if not ctype or major not in _MEDIA_MAJOR:
        raise UploadError(
            f"{media.rel}: no specific media type is known for this file ({media.content_type or 'not recognised'}); "
            f"Runway refuses generic types, so it is not sent by {transport}",
            retryable=False,
        )
    return ctype


@contextmanager
def _open(media: LocalMediaLike) -> Iterator[tuple[IO[bytes], int]]:
    """The checked file opened for reading (MediaChangedError if it is not that file any more), with its size
    now (not the size recorded when it was claimed)."""
    try:
        fh = os.fdopen(open_media(media), "rb")
    except OSError as exc:
        raise _os_error(media, exc) from exc
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise _os_error(media, exc) from exc
        yield fh, size


def _check_size(media: LocalMediaLike, transport: str, content_type: str, size: int, **caps: Any) -> None:
    problem = size_problem(transport, media.kind, content_type, size, **caps)
    if problem:
        raise UploadError(f"{media.rel} is {problem}", retryable=False)


def _os_error(media: LocalMediaLike, exc: OSError) -> UploadError:
    # A missing or unreadable file will not heal by itself; other I/O errors (a share hiccup) may.
    gone = isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError)
    return UploadError(f"{media.rel}: cannot read {media.file}: {exc.strerror or exc}", retryable=not gone)


# -- s3 ---------------------------------------------------------------------------------------------


def _client_error(exc: BaseException) -> Any:
    """The botocore ClientError behind ``exc`` (boto3's upload wraps it without ``from``), or None."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _s3_error(action: str, where: str, exc: Exception) -> UploadError:
    """``exc`` from botocore/boto3 as an UploadError naming the action, the place and the S3 error code."""
    client_error = _client_error(exc)
    if client_error is not None:
        error = client_error.response.get("Error", {})
        meta = client_error.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or "Unknown")
        status = meta.get("HTTPStatusCode")
        text = str(error.get("Message") or "").strip()
        retryable = code in _S3_PASSING or (isinstance(status, int) and (status >= 500 or status == 429))
        hint = _S3_HINTS.get(code, "")
        detail = "; ".join(x for x in (text, hint) if x)
        return UploadError(
            f"S3 {action} {where} failed: {code} (HTTP {status})" + (f": {detail}" if detail else ""),
            retryable=retryable,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UploadError(
            f"S3 {action} {where} failed: no usable S3 credentials ({exc}); set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role",
            retryable=False,
        )
    if isinstance(
        exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError | HTTPClientError
    ):
        return UploadError(f"S3 {action} {where} failed: cannot reach the store: {exc}", retryable=True)
    return UploadError(f"S3 {action} {where} failed: {type(exc).__name__}: {exc}", retryable=False)


class S3Transport:
    """Upload to a bucket and hand Runway a presigned GET URL; remove the object once the task is over."""

    name = "s3"

    def __init__(self, config: S3ConfigLike, client: Any, url_caps: Mapping[str, int] | None = None) -> None:
        self.config = config
        self.client = client
        self.url_caps = dict(URL_CAPS if url_caps is None else url_caps)

    def _key(self, media: LocalMediaLike, job_id: str) -> str:
        if not _JOB_ID.match(job_id):
            raise UploadError(f"job id {job_id!r} is not safe in an object key", retryable=False)
        return f"{self.config.prefix}{job_id}/{safe_filename(media)}"

    def _presign(self, key: str, expiry: int) -> str:
        try:
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.config.bucket, "Key": key}, ExpiresIn=expiry
            )
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error("presign", f"of s3://{self.config.bucket}/{key}", exc) from exc
        if len(url) > MAX_URL_LENGTH:
            raise UploadError(
                f"the presigned URL for s3://{self.config.bucket}/{key} is {len(url)} characters; Runway accepts at "
                f"most {MAX_URL_LENGTH}: shorten [s3] prefix, bucket or endpoint_url",
                retryable=False,
            )
        return str(url)

    def place(self, media: LocalMediaLike, job_id: str) -> Placed:
        # Imported here: boto3's transfer machinery costs a fifth of a second that most commands never need.
        from boto3.exceptions import Boto3Error
        from boto3.s3.transfer import TransferConfig

        ctype = _specific_type(media, "s3")
        key = self._key(media, job_id)
        expiry = int(self.config.presign_expiry)
        if not 1 <= expiry <= MAX_PRESIGN_EXPIRY:
            raise UploadError(
                f"[s3] presign_expiry is {expiry} s; SigV4 allows 1 to {MAX_PRESIGN_EXPIRY}", retryable=False
            )
        # Signing is local and the URL's length does not depend on when it is signed: refuse an
        # over-long URL before spending an upload on it.
        self._presign(key, expiry)
        transfer = TransferConfig(
            multipart_threshold=self.config.multipart_threshold,
            multipart_chunksize=self.config.multipart_chunksize,
            use_threads=True,
        )
        with _open(media) as (fh, size):
            _check_size(media, "s3", ctype, size, url_caps=self.url_caps)  # else Runway would not fetch it
            extra = {"ContentType": ctype}
            # boto3 reads a file given by name in parallel, one part per thread, each opening the name again;
            # the descriptor's /proc entry reopens the very file that was checked, whatever its name shows
            # now. Where there is no /proc, the open file goes as it is (parts are then read one by one).
            name = f"/proc/self/fd/{fh.fileno()}"
            try:
                if os.path.exists(name):
                    self.client.upload_file(name, self.config.bucket, key, Config=transfer, ExtraArgs=extra)
                else:
                    self.client.upload_fileobj(fh, self.config.bucket, key, Config=transfer, ExtraArgs=extra)
            except OSError as exc:
                raise _os_error(media, exc) from exc
            except (BotoCoreError, ClientError, Boto3Error) as exc:
                raise _s3_error("upload", f"of {media.rel} to s3://{self.config.bucket}/{key}", exc) from exc
        # Signed after the upload so a long upload does not eat into the URL's lifetime. The signature's
        # clock has whole seconds, so the floor of now is never later than the real expiry.
        signed = math.floor(time.time())
        url = self._presign(key, expiry)
        return Placed(url, "s3", key, float(signed + expiry))

    def remove(self, placed: Placed) -> None:
        """Delete the object; one already gone is fine. Does nothing when ``[s3] keep`` is set."""
        if placed.transport != "s3" or not placed.handle or self.config.keep:
            return
        try:
            self.client.delete_object(Bucket=self.config.bucket, Key=placed.handle)
        except (BotoCoreError, ClientError) as exc:
            error = _client_error(exc)
            if error is not None and error.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchBucket"):
                return
            failure = _s3_error("delete", f"of s3://{self.config.bucket}/{placed.handle}", exc)
            raise UploadError(str(failure), retryable=True) from exc

    def check(self, http: httpx.Client | None = None) -> None:
        """End to end, for ``runwatch doctor``: put a small object, presign it, GET it with ``http`` (or a
        client of its own), delete it. Raises UploadError saying which step failed."""
        key = f"{self.config.prefix}.doctor/{secrets.token_hex(8)}.txt"
        where = f"of s3://{self.config.bucket}/{key}"
        body = b"runwatch doctor " + secrets.token_hex(16).encode()
        try:
            self.client.put_object(Bucket=self.config.bucket, Key=key, Body=body, ContentType="text/plain")
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error("put", where, exc) from exc
        failed = True
        try:
            url = self._presign(key, max(60, min(int(self.config.presign_expiry), MAX_PRESIGN_EXPIRY)))
            own = http is None
            client = http or httpx.Client(timeout=30.0, follow_redirects=False)
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                raise UploadError(
                    f"GET of the presigned URL {where} failed: {type(exc).__name__}: {exc}", retryable=True
                ) from exc
            finally:
                if own:
                    client.close()
            if response.status_code != 200 or response.content != body:
                code = _xml_code(response.content)
                raise UploadError(
                    f"GET of the presigned URL {where} answered HTTP {response.status_code}"
                    + (f" {code}" if code else "")
                    + ("" if response.status_code != 200 else " with other bytes than were put"),
                    retryable=response.status_code >= 500,
                )
            failed = False
        finally:
            try:
                self.client.delete_object(Bucket=self.config.bucket, Key=key)
            except (BotoCoreError, ClientError) as exc:
                if not failed:  # the first failure is the one worth reporting
                    raise _s3_error("delete", where, exc) from exc


# -- runway -----------------------------------------------------------------------------------------


def _xml_code(body: bytes) -> str | None:
    """``Code`` of an S3-style XML error body (``<Error><Code>AccessDenied</Code>...``), or None."""
    match = _XML_CODE.search(body[:65536])
    return match.group(1).decode("ascii") if match else None


def _api_error(media: LocalMediaLike, exc: ApiError) -> UploadError:
    if isinstance(exc, ApiConnectionError | RateLimitedError):
        retryable = True
    else:
        retryable = isinstance(exc, ApiStatusError) and exc.status >= 500
    return UploadError(f"{media.rel}: Runway's upload endpoint: {exc}", retryable=retryable)


class RunwayTransport:
    """Runway's ephemeral uploads: a ``runway://`` URI valid for 24 hours, nothing to remove."""

    name = "runway"

    def __init__(self, api: RunwayClient, http: httpx.Client, upload_ttl: float = 86400.0) -> None:
        self.api = api
        self.http = http
        self.upload_ttl = upload_ttl

    def place(self, media: LocalMediaLike, job_id: str) -> Placed:
        filename = safe_filename(media)
        with _open(media) as (fh, size):
            _check_size(media, "runway", media.content_type or "", size)
            started = time.time()
            try:
                target = self.api.create_upload(filename)
            except ApiError as exc:
                raise _api_error(media, exc) from exc
            # The form is the credential: never send the API key to the storage.
            part = (filename, fh, media.content_type or "application/octet-stream")
            request = self.http.build_request("POST", target.upload_url, data=dict(target.fields), files={"file": part})
            request.headers.pop("Authorization", None)
            try:
                response = self.http.send(request)
            except OSError as exc:
                raise _os_error(media, exc) from exc
            except httpx.HTTPError as exc:
                raise UploadError(
                    f"{media.rel}: upload to Runway's storage failed: {type(exc).__name__}: {exc}", retryable=True
                ) from exc
        if not response.is_success:
            code = _xml_code(response.content)
            status = response.status_code
            raise UploadError(
                f"{media.rel}: Runway's storage answered HTTP {status}" + (f" {code}" if code else ""),
                retryable=status >= 500 or status == 429,
            )
        return Placed(target.runway_uri, "runway", target.runway_uri, started + self.upload_ttl)

    def remove(self, placed: Placed) -> None:
        """Nothing to do: Runway expires uploads by itself."""


# -- data -------------------------------------------------------------------------------------------


class DataTransport:
    """The file inline as a base64 data URI, when it fits Runway's caps on the URI's length."""

    name = "data"

    def __init__(self, caps: Mapping[str, int] | None = None) -> None:
        self.caps = dict(DATA_URI_CAPS if caps is None else caps)

    def place(self, media: LocalMediaLike, job_id: str) -> Placed:
        ctype = _specific_type(media, "data URI")
        with _open(media) as (fh, size):
            _check_size(media, "data", ctype, size, data_caps=self.caps)
            try:
                data = fh.read()
            except OSError as exc:
                raise _os_error(media, exc) from exc
        _check_size(media, "data", ctype, len(data), data_caps=self.caps)  # it may have grown since the fstat
        uri = f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
        return Placed(uri, "data", None, None)

    def remove(self, placed: Placed) -> None:
        """Nothing to do: the media travelled inside the request."""
