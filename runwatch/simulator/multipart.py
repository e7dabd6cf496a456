"""Just enough ``multipart/form-data`` parsing for a presigned form POST: text fields, then one file."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

__all__ = ["FilePart", "MultipartError", "parse_multipart"]


class MultipartError(ValueError):
    """The body is not the multipart form the upload expects."""


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str | None
    data: bytes


def _params(header: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = header
    params = {k.lower(): str(v) for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], FilePart | None]:
    """Fields in order, and the ``file`` part. Runway's storage wants the file last; so does this."""
    kind, params = _params(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise MultipartError("Content-Type must be multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise MultipartError("the multipart body is not terminated")
    fields: dict[str, str] = {}
    file_part: FilePart | None = None
    for raw in sections[1:-1]:
        if file_part is not None:
            raise MultipartError("the file must be the last part of the form")
        raw = raw.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, data = raw.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a part has no header block")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition, dparams = _params(headers.get("content-disposition", "").replace("form-data", "x/form-data", 1))
        name = dparams.get("name", "")
        if disposition != "x/form-data" or not name:
            raise MultipartError("a part has no form-data name")
        if name == "file":
            file_part = FilePart(dparams.get("filename", ""), headers.get("content-type"), data)
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    return fields, file_part
