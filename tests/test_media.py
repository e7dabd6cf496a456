"""Transports against real servers: SeaweedFS for S3, the simulator for Runway's uploads and fetches."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from runwatch.api import RunwayClient, UploadTarget
from runwatch.errors import UploadError
from runwatch.media import (
    DATA_URI_CAPS,
    UPLOAD_MAX,
    UPLOAD_MIN,
    DataTransport,
    Placed,
    RunwayTransport,
    S3Transport,
    choose,
    data_uri_length,
    safe_filename,
)
from runwatch.medialimits import size_text
from runwatch.simulator import Simulator

from .conftest import SAMPLES
from .s3server import S3Server

MIB = 1024 * 1024
TYPES = {
    "still.jpg": ("image", "image/jpeg"),
    "clip.mp4": ("video", "video/mp4"),
    "speech.mp3": ("audio", "audio/mpeg"),
}


@dataclass(frozen=True)
class S3Cfg:
    """The shape of ``runwatch.config.S3Config``, kept here so these tests do not depend on config parsing."""

    bucket: str
    prefix: str = "runwatch/"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    presign_expiry: int = 3600
    keep: bool = False
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    addressing_style: str = "path"


@dataclass(frozen=True)
class Media:
    """The shape of ``runwatch.request.LocalMedia``: the file as checked, in its folder."""

    field: tuple[str | int, ...]
    rel: str
    file: Path
    kind: str
    size: int
    content_type: str | None
    root: Path
    dev: int
    ino: int


def local(path: Path, kind: str, ctype: str | None, field: tuple[str | int, ...] = ("promptImage",)) -> Media:
    path = path.resolve()
    st = path.stat()
    return Media(field, path.name, path, kind, st.st_size, ctype, path.parent, st.st_dev, st.st_ino)


def sample(name: str, field: tuple[str | int, ...] = ("promptImage",)) -> Media:
    kind, ctype = TYPES[name]
    return local(SAMPLES / name, kind, ctype, field)


def job() -> str:
    return f"20260101T000000Z-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keys_under(client: Any, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


@pytest.fixture
def s3t(s3: S3Server) -> S3Transport:
    return S3Transport(S3Cfg(s3.bucket, endpoint_url=s3.endpoint_url), s3.client())


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


class TestS3Place:
    @pytest.mark.parametrize("name", sorted(TYPES))
    def test_stored_object_has_the_probed_content_type(self, s3: S3Server, s3t: S3Transport, name: str) -> None:
        """The object's stored ContentType is the media's type (head_object: what SeaweedFS serves for a key
        without one is a guess from the extension, which would prove nothing)."""
        media = sample(name)
        placed = s3t.place(media, job())
        head = s3.client().head_object(Bucket=s3.bucket, Key=placed.handle)
        assert head["ContentType"] == media.content_type
        assert head["ContentLength"] == media.size

    def test_type_comes_from_the_content_not_the_extension(
        self, s3: S3Server, s3t: S3Transport, tmp_path: Path
    ) -> None:
        """A JPEG named .bin is stored as image/jpeg: the type is the probed one, whatever the name says."""
        path = tmp_path / "shot.bin"
        path.write_bytes((SAMPLES / "still.jpg").read_bytes())
        placed = s3t.place(local(path, "image", "image/jpeg"), job())
        assert placed.handle is not None and placed.handle.endswith("/promptImage.bin")
        assert s3.client().head_object(Bucket=s3.bucket, Key=placed.handle)["ContentType"] == "image/jpeg"

    def test_presigned_url_serves_the_exact_bytes(self, s3t: S3Transport, http: httpx.Client) -> None:
        """The presigned GET returns the file byte for byte, with its type, and is a SigV4 URL under 2048 chars."""
        media = sample("still.jpg")
        job_id = job()
        before = time.time()
        placed = s3t.place(media, job_id)
        assert placed.transport == "s3"
        assert placed.handle == f"runwatch/{job_id}/promptImage.jpg"
        assert placed.expires_at is not None and before - 1 <= placed.expires_at - 3600 <= time.time()
        assert len(placed.uri) <= 2048
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in placed.uri and "X-Amz-Expires=3600" in placed.uri
        response = http.get(placed.uri)
        assert response.status_code == 200
        assert response.content == media.file.read_bytes()
        assert response.headers["content-type"] == "image/jpeg"

    def test_tampered_signature_is_refused(self, s3t: S3Transport, http: httpx.Client) -> None:
        """Changing one digit of the signature gets 403: the URL is really signed, not merely public."""
        placed = s3t.place(sample("still.jpg"), job())
        head, _, signature = placed.uri.rpartition("X-Amz-Signature=")
        flipped = ("1" if signature[0] == "0" else "0") + signature[1:]
        assert http.get(head + "X-Amz-Signature=" + flipped).status_code == 403

    def test_expired_presign_is_refused(self, s3: S3Server, http: httpx.Client) -> None:
        """A URL presigned for 1 s answers 403 two seconds later, while a fresh one for the same key works."""
        transport = S3Transport(S3Cfg(s3.bucket, presign_expiry=1), s3.client())
        placed = transport.place(sample("still.jpg"), job())
        assert placed.expires_at is not None and placed.expires_at <= time.time() + 1
        time.sleep(2.0)
        assert http.get(placed.uri).status_code == 403
        fresh = s3.client().generate_presigned_url(
            "get_object", Params={"Bucket": s3.bucket, "Key": placed.handle}, ExpiresIn=60
        )
        assert http.get(fresh).status_code == 200

    def test_overlong_url_is_refused_before_uploading(self, s3: S3Server) -> None:
        """A prefix that makes the URL exceed 2048 chars is refused, not retryable, and nothing is uploaded.

        Non-ASCII letters do it well within S3's 1024-byte key limit: each byte is three characters in a URL."""
        prefix = "é" * 450 + "/"
        transport = S3Transport(S3Cfg(s3.bucket, prefix=prefix), s3.client())
        with pytest.raises(UploadError, match="2048") as info:
            transport.place(sample("still.jpg"), job())
        assert not info.value.retryable
        assert "prefix" in str(info.value)
        assert keys_under(s3.client(), s3.bucket, prefix) == []

    def test_remove_deletes_and_tolerates_missing(self, s3: S3Server, s3t: S3Transport) -> None:
        """remove deletes the object; removing it again (already gone) is fine."""
        placed = s3t.place(sample("clip.mp4", ("videoUri",)), job())
        client = s3.client()
        client.head_object(Bucket=s3.bucket, Key=placed.handle)
        s3t.remove(placed)
        with pytest.raises(ClientError) as info:
            client.head_object(Bucket=s3.bucket, Key=placed.handle)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        s3t.remove(placed)

    def test_keep_leaves_the_object(self, s3: S3Server) -> None:
        """With keep set, remove leaves the object where it is."""
        transport = S3Transport(S3Cfg(s3.bucket, keep=True), s3.client())
        placed = transport.place(sample("still.jpg"), job())
        transport.remove(placed)
        s3.client().head_object(Bucket=s3.bucket, Key=placed.handle)

    def test_large_file_goes_multipart(self, s3: S3Server, tmp_path: Path, http: httpx.Client) -> None:
        """Above the threshold the upload is multipart (the ETag says how many parts) and the bytes come back."""
        path = tmp_path / "big.mp4"
        body = (SAMPLES / "clip.mp4").read_bytes() + os.urandom(12 * MIB)
        path.write_bytes(body)
        config = S3Cfg(s3.bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
        placed = S3Transport(config, s3.client()).place(local(path, "video", "video/mp4", ("videoUri",)), job())
        head = s3.client().head_object(Bucket=s3.bucket, Key=placed.handle)
        assert head["ETag"].strip('"').endswith("-3")  # 12 MiB and a little, in 5 MiB parts
        assert head["ContentType"] == "video/mp4"
        response = http.get(placed.uri)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()

    def test_file_runway_would_not_fetch_is_refused_before_uploading(self, s3: S3Server, tmp_path: Path) -> None:
        """An image over Runway's 16 MiB URL cap is refused (suggesting the runway transport) and not uploaded;
        with a larger cap configured it goes."""
        path = tmp_path / "huge.png"
        with open(path, "wb") as fh:
            fh.truncate(16 * MIB + 1)
        media = local(path, "image", "image/png")
        job_id = job()
        with pytest.raises(UploadError, match=r'16 MiB.*transport "runway"') as info:
            S3Transport(S3Cfg(s3.bucket), s3.client()).place(media, job_id)
        assert not info.value.retryable
        assert keys_under(s3.client(), s3.bucket, f"runwatch/{job_id}/") == []
        wider = S3Transport(S3Cfg(s3.bucket), s3.client(), url_caps={"image": 32 * MIB})
        assert wider.place(media, job_id).handle == f"runwatch/{job_id}/promptImage.png"

    def test_small_file_is_a_single_put(self, s3: S3Server, s3t: S3Transport) -> None:
        """Below the threshold the ETag is a plain MD5 of the content: one PutObject."""
        placed = s3t.place(sample("still.jpg"), job())
        head = s3.client().head_object(Bucket=s3.bucket, Key=placed.handle)
        assert head["ETag"].strip('"') == hashlib.md5((SAMPLES / "still.jpg").read_bytes()).hexdigest()

    @pytest.mark.parametrize("ctype", [None, "application/octet-stream", "binary/octet-stream", "text/plain"])
    def test_no_specific_type_is_refused(self, s3: S3Server, s3t: S3Transport, ctype: str | None) -> None:
        """Without a specific media type nothing is uploaded: Runway would refuse the URL anyway."""
        job_id = job()
        with pytest.raises(UploadError, match="media type") as info:
            s3t.place(replace(sample("still.jpg"), content_type=ctype), job_id)
        assert not info.value.retryable
        assert keys_under(s3.client(), s3.bucket, f"runwatch/{job_id}/") == []

    def test_key_never_uses_the_users_name(self, s3t: S3Transport, tmp_path: Path) -> None:
        """Only the extension survives from the user's file name; the rest of the key is the field path."""
        path = tmp_path / "my holiday?#%&.JPG"
        path.write_bytes((SAMPLES / "still.jpg").read_bytes())
        media = local(path, "image", "image/jpeg", ("referenceImages", 0, "uri"))
        job_id = job()
        placed = s3t.place(media, job_id)
        assert placed.handle == f"runwatch/{job_id}/referenceImages-0-uri.jpg"

    def test_unsafe_job_id_is_refused(self, s3t: S3Transport) -> None:
        """A job id that could climb out of the prefix is refused before anything is sent."""
        with pytest.raises(UploadError) as info:
            s3t.place(sample("still.jpg"), "../other")
        assert not info.value.retryable


class TestS3Errors:
    @pytest.mark.parametrize(
        ("access", "secret", "code"),
        [
            ("NOSUCHACCESSKEY", None, "InvalidAccessKeyId"),
            (None, "not-the-secret", "SignatureDoesNotMatch"),
        ],
    )
    def test_wrong_credentials_are_not_retryable(
        self, s3: S3Server, access: str | None, secret: str | None, code: str
    ) -> None:
        """Bad credentials need a person: not retryable, and the message names bucket, key and S3 code."""
        import boto3
        from botocore.config import Config

        client = boto3.session.Session(
            aws_access_key_id=access or s3.access_key,
            aws_secret_access_key=secret or s3.secret_key,
            region_name=s3.region,
        ).client(
            "s3", endpoint_url=s3.endpoint_url, config=Config(signature_version="s3v4", s3={"addressing_style": "path"})
        )
        job_id = job()
        with pytest.raises(UploadError) as info:
            S3Transport(S3Cfg(s3.bucket), client).place(sample("still.jpg"), job_id)
        message = str(info.value)
        assert not info.value.retryable
        assert code in message and s3.bucket in message and f"runwatch/{job_id}/promptImage.jpg" in message
        assert isinstance(info.value.__cause__, Exception)

    def test_missing_bucket_is_not_retryable(self, s3: S3Server) -> None:
        """NoSuchBucket (the server creates no buckets on demand) is a configuration problem."""
        transport = S3Transport(S3Cfg("no-such-bucket-here"), s3.client())
        with pytest.raises(UploadError) as info:
            transport.place(sample("still.jpg"), job())
        assert not info.value.retryable
        assert "NoSuchBucket" in str(info.value) and "no-such-bucket-here" in str(info.value)

    def test_unreachable_server_is_retryable(self, s3: S3Server) -> None:
        """Nobody listening on the endpoint is passing trouble: retryable, for upload and for remove."""
        import boto3
        from botocore.config import Config

        client = boto3.session.Session(
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name=s3.region,
        ).client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
            ),
        )
        transport = S3Transport(S3Cfg(s3.bucket), client)
        with pytest.raises(UploadError) as info:
            transport.place(sample("still.jpg"), job())
        assert info.value.retryable
        with pytest.raises(UploadError) as removal:
            transport.remove(Placed("", "s3", "runwatch/x/promptImage.jpg", None))
        assert removal.value.retryable

    def test_check_passes_and_leaves_nothing(self, s3: S3Server, s3t: S3Transport) -> None:
        """check() puts, presigns, fetches and deletes a probe object; nothing is left behind."""
        s3t.check()
        assert keys_under(s3.client(), s3.bucket, "runwatch/.doctor/") == []

    def test_check_names_what_failed(self, s3: S3Server) -> None:
        """check() against a missing bucket says the put failed, with the S3 code."""
        with pytest.raises(UploadError, match=r"S3 put .*NoSuchBucket") as info:
            S3Transport(S3Cfg("no-such-bucket-here"), s3.client()).check()
        assert not info.value.retryable


class TestSimulatorEndToEnd:
    @pytest.fixture
    def api(self, sim: Simulator, http: httpx.Client) -> RunwayClient:
        return RunwayClient(http, base_url=sim.url, api_key=sim.key, max_attempts=1)

    def test_presigned_url_is_fetched_by_the_simulator(
        self, s3t: S3Transport, sim: Simulator, api: RunwayClient
    ) -> None:
        """A presigned S3 URL used as promptImage is fetched (200, image/jpeg, the same bytes) and accepted."""
        media = sample("still.jpg")
        placed = s3t.place(media, job())
        created = api.create_task(
            "image_to_video",
            {
                "model": "gen4_turbo",
                "promptImage": placed.uri,
                "promptText": "waves",
                "ratio": "1280:720",
                "duration": 5,
            },
        )
        assert created.id
        fetched = [f for f in sim.world.fetches if f["path"] == "promptImage"]
        assert len(fetched) == 1
        assert fetched[0]["status"] == 200 and fetched[0]["content_type"] == "image/jpeg"
        assert fetched[0]["sha256"] == hashlib.sha256(media.file.read_bytes()).hexdigest()
        assert "X-Amz-Signature=***" in fetched[0]["url"]  # the simulator logs URLs without their signature

    def test_runway_upload_is_accepted_by_a_create(self, sim: Simulator, api: RunwayClient) -> None:
        """The form POST (fields first, file last, no API key) yields a runway:// URI a create accepts."""
        sent: list[httpx.Request] = []
        with httpx.Client(
            timeout=30.0, headers={"Authorization": f"Bearer {sim.key}"}, event_hooks={"request": [sent.append]}
        ) as storage:
            transport = RunwayTransport(api, storage)
            before = time.time()
            placed = transport.place(sample("still.jpg"), job())
        assert placed.transport == "runway" and placed.uri.startswith("runway://") and placed.handle == placed.uri
        assert placed.expires_at is not None and before + 86400 - 1 <= placed.expires_at <= time.time() + 86400
        upload = sim.world.uploads[placed.uri.rsplit("/", 1)[-1]]
        assert upload.filename == "promptImage.jpg" and upload.size == (SAMPLES / "still.jpg").stat().st_size
        assert upload.content_type == "image/jpeg"
        assert len(sent) == 1 and "authorization" not in sent[0].headers
        created = api.create_task(
            "image_to_video",
            {
                "model": "gen4_turbo",
                "promptImage": placed.uri,
                "promptText": "waves",
                "ratio": "1280:720",
                "duration": 5,
            },
        )
        assert created.id
        transport.remove(placed)  # nothing to do, and nothing goes wrong

    def test_runway_upload_of_video_and_audio(self, sim: Simulator, api: RunwayClient, http: httpx.Client) -> None:
        """Video and audio go through the same flow with their own names."""
        transport = RunwayTransport(api, http)
        for name, field in (("clip.mp4", ("videoUri",)), ("speech.mp3", ("audioUri",))):
            placed = transport.place(sample(name, field), job())
            upload = sim.world.uploads[placed.uri.rsplit("/", 1)[-1]]
            assert upload.filename == f"{field[0]}.{name.rsplit('.', 1)[1]}"
            assert upload.content_type == TYPES[name][1]

    @pytest.mark.parametrize("size", [UPLOAD_MIN - 1, UPLOAD_MAX + 1])
    def test_size_limits_are_checked_before_any_request(
        self, sim: Simulator, api: RunwayClient, http: httpx.Client, tmp_path: Path, size: int
    ) -> None:
        """Too small or too big is refused, not retryable, naming the limit, before Runway hears of it."""
        path = tmp_path / "odd.mp4"
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: a 200 MB test file costs no disk
        with pytest.raises(
            UploadError, match=re.escape(f"takes {size_text(UPLOAD_MIN)} to {size_text(UPLOAD_MAX)}")
        ) as info:
            RunwayTransport(api, http).place(local(path, "video", "video/mp4", ("videoUri",)), job())
        assert not info.value.retryable
        assert sim.requests("/v1/uploads") == []

    def test_storage_refusal_carries_its_code(self, sim: Simulator, http: httpx.Client) -> None:
        """A form the storage refuses (a forged signature: 403 AccessDenied) is not retryable and says why."""

        class Forging(RunwayClient):
            def create_upload(self, filename: str) -> UploadTarget:
                target = super().create_upload(filename)
                return UploadTarget(
                    target.upload_url, {**target.fields, "x-amz-signature": "0" * 64}, target.runway_uri
                )

        api = Forging(http, base_url=sim.url, api_key=sim.key, max_attempts=1)
        with pytest.raises(UploadError, match="HTTP 403 AccessDenied") as info:
            RunwayTransport(api, http).place(sample("still.jpg"), job())
        assert not info.value.retryable

    @pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (400, False)])
    def test_storage_status_decides_retry(
        self, sim: Simulator, http: httpx.Client, status: int, retryable: bool
    ) -> None:
        """5xx and 429 from the storage are passing trouble; other 4xx are not."""
        storage = _StatusServer(status, b"<Error><Code>SlowDown</Code><Message>later</Message></Error>")

        class Elsewhere(RunwayClient):
            def create_upload(self, filename: str) -> UploadTarget:
                target = super().create_upload(filename)
                return UploadTarget(storage.url, target.fields, target.runway_uri)

        try:
            api = Elsewhere(http, base_url=sim.url, api_key=sim.key, max_attempts=1)
            with pytest.raises(UploadError, match=f"HTTP {status} SlowDown") as info:
                RunwayTransport(api, http).place(sample("still.jpg"), job())
        finally:
            storage.close()
        assert info.value.retryable is retryable
        assert storage.tails and storage.tails[0].rstrip().endswith(b"--")

    def test_upload_streams_from_disk(self, sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
        """A 150 MB file goes out whole while the process holds only a few MB of it at a time."""
        path = tmp_path / "long.mp4"
        with open(path, "wb") as fh:
            fh.truncate(150 * MIB)
        storage = _StatusServer(204, b"")

        class Elsewhere(RunwayClient):
            def create_upload(self, filename: str) -> UploadTarget:
                target = super().create_upload(filename)
                return UploadTarget(storage.url, target.fields, target.runway_uri)

        api = Elsewhere(http, base_url=sim.url, api_key=sim.key, max_attempts=1)
        tracemalloc.start()
        try:
            placed = RunwayTransport(api, http).place(local(path, "video", "video/mp4", ("videoUri",)), job())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            storage.close()
        assert placed.uri.startswith("runway://")
        assert storage.sizes[0] > 150 * MIB
        assert peak < 16 * MIB

    def test_api_refusal_becomes_upload_error(self, sim: Simulator, http: httpx.Client) -> None:
        """Runway refusing the upload slot (a key it does not know: 401) is an UploadError, not retryable."""
        api = RunwayClient(http, base_url=sim.url, api_key="key_" + "f" * 127, max_attempts=1)
        with pytest.raises(UploadError, match="401") as info:
            RunwayTransport(api, http).place(sample("still.jpg"), job())
        assert not info.value.retryable


class _StatusServer:
    """A loopback storage stand-in that reads the whole form (keeping its size and tail) and answers one status."""

    def __init__(self, status: int, body: bytes) -> None:
        self.sizes: list[int] = []
        self.tails: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                left, tail = int(self.headers.get("Content-Length") or 0), b""
                outer.sizes.append(left)
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                    tail = (tail + chunk)[-4096:]
                outer.tails.append(tail)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/upload"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class TestDataTransport:
    def test_within_cap_is_an_exact_data_uri(self) -> None:
        """A small file becomes data:<type>;base64,<bytes>, with nothing to remove and no expiry."""
        media = sample("still.jpg")
        placed = DataTransport().place(media, job())
        head, _, payload = placed.uri.partition(",")
        assert head == "data:image/jpeg;base64"
        assert base64.b64decode(payload, validate=True) == media.file.read_bytes()
        assert (placed.transport, placed.handle, placed.expires_at) == ("data", None, None)
        assert len(placed.uri) == data_uri_length("image/jpeg", media.size)
        DataTransport().remove(placed)

    def test_data_uri_is_accepted_by_the_simulator(self, sim: Simulator, http: httpx.Client) -> None:
        """The simulator (Runway's rules) accepts the data URI as promptImage."""
        placed = DataTransport().place(sample("still.jpg"), job())
        api = RunwayClient(http, base_url=sim.url, api_key=sim.key, max_attempts=1)
        created = api.create_task(
            "image_to_video", {"model": "gen4_turbo", "promptImage": placed.uri, "ratio": "1280:720", "duration": 5}
        )
        assert created.id

    def test_cap_is_on_the_uri_length(self) -> None:
        """The cap counts the whole URI: exactly at it passes, one character less refuses."""
        media = sample("speech.mp3", ("audioUri",))
        length = data_uri_length("audio/mpeg", media.size)
        assert len(DataTransport({"audio": length}).place(media, job()).uri) == length
        with pytest.raises(UploadError, match=f"at most {length - 1:,} characters") as info:
            DataTransport({"audio": length - 1}).place(media, job())
        assert not info.value.retryable
        assert '"s3"' in str(info.value) and '"runway"' in str(info.value)

    def test_default_caps_follow_runways_docs(self, tmp_path: Path) -> None:
        """Defaults: 5 MiB for images, 16 MiB for video and audio; a 4 MiB file fits as video, not as image."""
        assert (
            dict(DataTransport().caps)
            == dict(DATA_URI_CAPS)
            == {"image": 5 * MIB, "video": 16 * MIB, "audio": 16 * MIB}
        )
        path = tmp_path / "four.bin"
        with open(path, "wb") as fh:
            fh.truncate(4 * MIB)
        with pytest.raises(UploadError, match="5 MiB"):
            DataTransport().place(local(path, "image", "image/png"), job())
        assert DataTransport().place(local(path, "video", "video/mp4"), job()).uri.startswith("data:video/mp4;")

    def test_generic_type_is_refused(self) -> None:
        """A data URI needs a specific media type: none, or a generic one, is refused."""
        with pytest.raises(UploadError, match="media type") as info:
            DataTransport().place(replace(sample("still.jpg"), content_type="application/octet-stream"), job())
        assert not info.value.retryable


class TestChoose:
    def test_auto(self) -> None:
        """auto is s3 with a bucket, runway without."""
        assert choose("auto", s3_configured=True) == "s3"
        assert choose("auto", s3_configured=False) == "runway"

    @pytest.mark.parametrize("name", ["runway", "data"])
    def test_explicit_values_pass_through(self, name: str) -> None:
        """An explicit transport is returned as it is, bucket or not."""
        assert choose(name, s3_configured=False) == name
        assert choose(name, s3_configured=True) == name

    def test_s3_needs_a_bucket(self) -> None:
        """s3 without a bucket cannot work: not retryable."""
        assert choose("s3", s3_configured=True) == "s3"
        with pytest.raises(UploadError, match="bucket") as info:
            choose("s3", s3_configured=False)
        assert not info.value.retryable

    def test_unknown_name(self) -> None:
        """A name that is no transport is refused."""
        with pytest.raises(UploadError):
            choose("ftp", s3_configured=True)


class TestSafeFilename:
    def test_field_path_and_extension_only(self, tmp_path: Path) -> None:
        """The name is the field path plus the lower-cased extension; odd or missing extensions follow the type."""
        assert safe_filename(local(SAMPLES / "clip.mp4", "video", "video/mp4", ("videoUri",))) == "videoUri.mp4"
        assert (
            safe_filename(
                Media(
                    ("references", 2, "uri"),
                    "x",
                    Path("../../etc/pass wd.PNG"),
                    "image",
                    1,
                    "image/png",
                    Path("/"),
                    0,
                    0,
                )
            )
            == "references-2-uri.png"
        )
        assert (
            safe_filename(Media(("promptImage",), "x", Path("noext"), "image", 1, "image/webp", Path("/"), 0, 0))
            == "promptImage.webp"
        )
        assert (
            safe_filename(Media(("promptImage",), "x", Path("x.j p g"), "image", 1, "image/jpeg", Path("/"), 0, 0))
            == "promptImage.jpg"
        )
