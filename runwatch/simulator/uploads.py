"""The simulator's upload routes: ``POST /v1/uploads`` (a presigned POST policy, as Runway hands out) and the
storage-like ``/_uploads/<id>`` that takes the multipart POST and answers in S3's XML errors.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import tempfile
import uuid
from base64 import b64encode

from runwatch.catalog import Issue
from runwatch.simulator.handling import Routes, _error, _Reply
from runwatch.simulator.multipart import MultipartError, parse_multipart
from runwatch.simulator.world import Upload, iso_ms

_UPLOAD_PATH = re.compile(r"^/_uploads/([0-9a-f]{32})$")


class UploadRoutes(Routes):
    """Uploads created and received."""

    def _create_upload(self, raw: bytes) -> None:
        sim = self.server.sim
        body = self._json(raw)
        filename = body.get("filename") if isinstance(body, dict) else None
        if not isinstance(filename, str) or not filename.strip() or "/" in filename:
            raise _error(
                400,
                "Validation of body failed",
                [
                    Issue(
                        "invalid_type",
                        ("filename",),
                        "Invalid input: expected string, received undefined",
                        {"expected": "string"},
                    )
                ],
            )
        if body.get("type", "ephemeral") != "ephemeral":
            raise _error(
                400,
                "Validation of body failed",
                [Issue("invalid_value", ("type",), 'Invalid input: expected "ephemeral"', {"values": ["ephemeral"]})],
            )
        now = sim.world.clock.now()
        upload = Upload(id=uuid.uuid4().hex, filename=filename, created=now, secret="")
        key = f"uploads/{upload.id}/{filename}"
        policy = b64encode(
            json.dumps(
                {
                    "expiration": iso_ms(now + 3600),
                    "conditions": [
                        {"key": key},
                        ["content-length-range", sim.config.upload_min, sim.config.upload_max],
                    ],
                }
            ).encode()
        ).decode()
        fields = {
            "key": key,
            "policy": policy,
            "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": f"SIMULATOR/{iso_ms(now)[:10].replace('-', '')}/us-east-1/s3/aws4_request",
            "x-amz-date": iso_ms(now)[:19].replace("-", "").replace(":", "") + "Z",
        }
        fields["x-amz-signature"] = sim.upload_signature(upload, policy)
        upload.secret = fields["x-amz-signature"]
        with sim.world.lock:
            sim.world.uploads[upload.id] = upload
        raise _Reply(
            200,
            {
                "uploadUrl": f"{sim.url}/_uploads/{upload.id}",
                "fields": fields,
                "runwayUri": f"runway://uploads/{upload.id}",
            },
        )

    def _s3_error(self, status: int, code: str, message: str) -> _Reply:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
        ).encode()
        return _Reply(status, xml)

    def _receive_upload(self, method: str, path: str, raw: bytes) -> None:
        sim = self.server.sim
        match = _UPLOAD_PATH.match(path)
        if method != "POST" or not match:
            raise self._s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        with sim.world.lock:
            upload = sim.world.uploads.get(match.group(1))
        if upload is None:
            raise self._s3_error(404, "NoSuchUpload", "The upload does not exist.")
        try:
            form, file_part = parse_multipart(self.headers.get("Content-Type", ""), raw)
        except MultipartError as exc:
            raise self._s3_error(400, "MalformedPOSTRequest", str(exc)) from exc
        policy = form.get("policy", "")
        if (
            form.get("x-amz-signature") != upload.secret
            or not hmac.compare_digest(sim.upload_signature(upload, policy), upload.secret)
            or form.get("key") != f"uploads/{upload.id}/{upload.filename}"
        ):
            raise self._s3_error(403, "AccessDenied", "Invalid according to Policy: signature or key mismatch.")
        if sim.world.clock.now() > upload.created + 3600:
            raise self._s3_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        if file_part is None:
            raise self._s3_error(400, "InvalidArgument", "POST requires exactly one file upload per request.")
        data = file_part.data
        if len(data) < sim.config.upload_min:
            raise self._s3_error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
        if len(data) > sim.config.upload_max:
            raise self._s3_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        from runwatch.mediafiles import probe

        info = probe(data)
        target = os.path.join(sim._dir or tempfile.gettempdir(), upload.id)
        with open(target, "wb") as fh:
            fh.write(data)
        with sim.world.lock:
            upload.path, upload.size = target, len(data)
            upload.content_type = info.content_type if info else file_part.content_type
            upload.kind = info.kind if info else None
        raise _Reply(204)
