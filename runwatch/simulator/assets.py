"""Media going in and out of the simulator: checks of media references, and signed output URLs.

Incoming references are checked as Runway documents them (reference §4): ``https://`` URLs are fetched
for real (no redirects, a specific ``Content-Type`` of the field's kind, size caps), ``data:`` URIs must
be base64 with a specific media type and fit their cap, ``runway://`` URIs must name an upload that
finished and has not expired. The texts of the failures are Runway's own where known.

Outgoing files are generated per task (``runwatch.mediafiles``) and served under URLs that carry an
expiring HMAC token, like the ``_jwt`` of Runway's CloudFront URLs: fresh on every GET of the task,
403 once expired or altered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from runwatch.catalog import Issue, MediaRef, format_path
from runwatch.simulator.world import World

__all__ = ["ACCEPTED_TYPES", "AssetChecker", "Checked", "OutputSigner", "plan_outputs"]

ACCEPTED_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"}),
    "video": frozenset({"video/mp4", "video/webm", "video/quicktime", "video/mov", "video/ogg", "video/h264"}),
    "audio": frozenset(
        {
            "audio/mpeg",
            "audio/mp3",
            "audio/mp4",
            "audio/wav",
            "audio/x-wav",
            "audio/wave",
            "audio/flac",
            "audio/x-flac",
            "audio/aac",
            "audio/ogg",
            "audio/webm",
        }
    ),
}

FETCH_FAILED = "Failed to fetch asset. The URL may be incorrect or the server hosting the asset may be down."

# Duration rules the SDK docstrings and captures state for particular inputs: (endpoint, field path) ->
# (minimum, maximum) seconds.
_DURATION_RULES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("video_upscale", "videoUri"): (None, 30.0),
    ("video_to_hdr", "videoUri"): (None, 30.0),
    ("character_performance", "reference.uri"): (3.0, 30.0),
    ("voice_isolation", "audioUri"): (4.6, 3600.0),
}


@dataclass(frozen=True)
class Checked:
    """A reference that passed, with what is known of its content (for prices and durations)."""

    ref: MediaRef
    content_type: str | None
    size: int | None
    width: int | None = None
    height: int | None = None
    duration: float | None = None


def _custom(ref: MediaRef, message: str) -> Issue:
    return Issue("custom", ref.path, message)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class AssetChecker:
    """Checks one media reference; all network I/O happens outside the world's lock."""

    def __init__(self, world: World, client: httpx.Client) -> None:
        self.world = world
        self.client = client

    def check(self, endpoint: str, ref: MediaRef) -> Issue | Checked:
        value = ref.value
        if value.startswith("data:"):
            result = self._data(ref)
        elif value.startswith("runway://"):
            result = self._runway(ref)
        else:
            result = self._url(ref)
        if isinstance(result, Issue):
            return result
        return self._rules(endpoint, result)

    def _rules(self, endpoint: str, item: Checked) -> Issue | Checked:
        ref = item.ref
        if item.width and item.height:
            ratio = item.width / item.height
            if ratio < 0.5:
                return _custom(
                    ref, f"Invalid asset aspect ratio. width / height ratio must be at least 0.5. Got {ratio:.3f}."
                )
            if max(item.width, item.height) > 8000:
                return _custom(ref, "Invalid asset dimensions")
        lo, hi = _DURATION_RULES.get((endpoint, format_path(ref.path)), (None, None))
        if item.duration is not None:
            if hi is not None and item.duration > hi:
                return Issue(
                    "too_big",
                    ref.path,
                    f"Asset duration must be at most {hi:g} seconds",
                    {"maximum": hi, "type": "number", "inclusive": True, "origin": "number"},
                )
            if lo is not None and item.duration < lo:
                return Issue(
                    "too_small",
                    ref.path,
                    f"Asset duration must be at least {lo:g} seconds",
                    {"minimum": lo, "type": "number", "inclusive": True, "origin": "number"},
                )
        return item

    def _content(self, ref: MediaRef, content_type: str | None, data: bytes | None) -> Issue | Checked:
        """Common tail: the declared type must be specific and of the field's kind; probe what we have."""
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype not in ACCEPTED_TYPES[ref.kind]:
            return _custom(ref, "Unsupported asset type.")
        if data is None:
            return Checked(ref, ctype, None)
        from runwatch.mediafiles import probe  # the probe is only needed once there are bytes

        info = probe(data)
        if info is not None and info.kind != ref.kind:
            return _custom(ref, "Unsupported asset type.")
        if info is None:
            return Checked(ref, ctype, len(data))
        return Checked(ref, ctype, len(data), info.width, info.height, info.duration)

    def _data(self, ref: MediaRef) -> Issue | Checked:
        head, sep, payload = ref.value.partition(",")
        cap = self.world.config.data_uri_caps[ref.kind]
        if not sep or not head.endswith(";base64"):
            return _custom(ref, "Invalid data URI.")
        if len(ref.value) > cap:
            return Issue(
                "too_big",
                ref.path,
                f"Data URI must be at most {cap} characters",
                {"maximum": cap, "type": "string", "inclusive": True, "origin": "string"},
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return _custom(ref, "Invalid data URI.")
        return self._content(ref, head[5:-7], data)

    def _runway(self, ref: MediaRef) -> Issue | Checked:
        upload_id = ref.value.removeprefix("runway://").rsplit("/", 1)[-1]
        with self.world.lock:
            upload = self.world.uploads.get(upload_id)
            now = self.world.clock.now()
        if upload is None or upload.path is None:
            return _custom(ref, "Invalid asset URI. The upload does not exist or was not completed.")
        if now > upload.created + self.world.config.upload_ttl:
            return _custom(ref, "Invalid asset URI. The upload has expired.")
        with open(upload.path, "rb") as fh:
            head = fh.read(1024 * 1024)
        checked = self._content(ref, upload.content_type, head)
        if isinstance(checked, Checked):
            return Checked(ref, checked.content_type, upload.size, checked.width, checked.height, checked.duration)
        return checked

    def _url(self, ref: MediaRef) -> Issue | Checked:
        config = self.world.config
        value = ref.value
        if len(value) > 2048:
            return Issue(
                "too_big",
                ref.path,
                "Too big: expected string to have <=2048 characters",
                {"maximum": 2048, "origin": "string", "inclusive": True},
            )
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
        except ValueError:
            return _custom(ref, "Invalid URL")
        if parts.scheme not in ("https", "http") or not host:
            return _custom(ref, "Invalid URL" if not parts.scheme else "Only HTTPS URLs are allowed.")
        loopback_ok = config.allow_http_loopback and _is_loopback(host)
        if parts.scheme == "http" and not loopback_ok:
            return _custom(ref, "Only HTTPS URLs are allowed.")
        if _is_ip(host) and not loopback_ok:
            return _custom(ref, "URLs must be hosted on a domain.")
        if not config.fetch:
            return Checked(ref, None, None)
        return self._fetch(ref)

    def _fetch(self, ref: MediaRef) -> Issue | Checked:
        cap = self.world.config.url_caps[ref.kind]
        started = time.monotonic()
        entry: dict[str, Any] = {"url": mask_url(ref.value), "path": format_path(ref.path), "kind": ref.kind}
        try:
            with self.client.stream("GET", ref.value, headers={"User-Agent": "RunwayML API/simulator"}) as resp:
                entry.update(status=resp.status_code, content_type=resp.headers.get("content-type"))
                if resp.status_code != 200:
                    return _custom(ref, f'Failed to fetch asset. Received HTTP response code "{resp.status_code}".')
                length = resp.headers.get("content-length")
                if length is None or not length.isdigit():
                    return _custom(ref, "Failed to fetch asset. The server did not send a Content-Length.")
                if int(length) > cap:
                    return _custom(ref, f"Asset is too large. The maximum size is {cap // (1024 * 1024)}MB.")
                data = b"".join(resp.iter_bytes())
                entry["bytes"] = len(data)
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                return self._content(ref, resp.headers.get("content-type"), data)
        except httpx.TimeoutException:
            entry["error"] = "timeout"
            return _custom(ref, "Timeout while fetching asset.")
        except httpx.HTTPError as exc:
            entry["error"] = type(exc).__name__
            return _custom(ref, FETCH_FAILED)
        finally:
            entry["seconds"] = round(time.monotonic() - started, 4)
            self.world.log_fetch(entry)


def mask_url(url: str) -> str:
    """A URL with its signature parameters blanked, fit for logs."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    masked = []
    for pair in parts.query.split("&"):
        key, _, _ = pair.partition("=")
        secret = key.lower() in ("x-amz-signature", "signature", "sig", "_jwt", "x-amz-security-token")
        masked.append(f"{key}=***" if secret else pair)
    return parts._replace(query="&".join(masked)).geturl()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OutputSigner:
    """Mints and checks the expiring tokens of output URLs."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, task_id: str, index: int, expires: float) -> str:
        payload = _b64(json.dumps({"t": task_id, "i": index, "exp": int(expires)}, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
        return f"{payload}.{mac}"

    def verify(self, token: str, task_id: str, index: int, now: float) -> bool:
        payload, _, mac = token.partition(".")
        want = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, want):
            return False
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return False
        return bool(claims.get("t") == task_id and claims.get("i") == index and now <= claims.get("exp", 0))


def _count(body: dict[str, Any], *names: str) -> int:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16:
            return value
    return 1


_VIDEO_FORMATS = {"prores": "mov", "hdr_prores": "mov", "mov": "mov"}
_SEQUENCE_FORMATS = (
    "png_sequence",
    "hdr_png_sequence",
    "hdr_exr_sequence",
    "hdr_exr_acescg_sequence_1_3",
    "hdr_exr_acescg_sequence_2_0",
)
_AUDIO_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "ogg_opus": "ogg"}
_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}


def plan_outputs(kind: str, body: dict[str, Any]) -> list[str]:
    """The output files a task returns, as formats: what Runway would hand back for this body."""
    fmt = body.get("outputFormat", body.get("format"))
    if kind == "video":
        if fmt in _SEQUENCE_FORMATS:
            return ["zip"]
        return [_VIDEO_FORMATS.get(str(fmt), "mp4")]
    if kind == "image":
        return [_IMAGE_FORMATS.get(str(fmt), "png")] * _count(body, "outputCount")
    return [_AUDIO_FORMATS.get(str(fmt), "mp3")] * _count(body, "numVariants")
