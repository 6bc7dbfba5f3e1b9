"""`bst-rt web BUNDLE`: serve the browser client (clients/web, built) and one verified bundle on 127.0.0.1.

The page runs the portable chain itself (onnxruntime-web), so nothing leaves the machine: this server only hands out
the page's files, the bundle files the manifest lists and the class table (`/taxonomy.json`, from THE table in
`taxonomy.py`, so the page names classes as `bst-rt classify` does). It sends the headers WebAssembly threads need
(the page is cross-origin isolated: COOP same-origin + COEP require-corp) and WASM's MIME type. The bundle is hash
checked before the server starts; the page checks each graph's sha256 again as it downloads it.
"""
from __future__ import annotations

import json
import mimetypes
import os
import posixpath
import shutil
import threading
import webbrowser
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .bundle import MANIFEST_NAME, Bundle, load_bundle
from .errors import BundleError, DataError
from .portable import CONTRACT
from .taxonomy import CLASSES, PARENT_NAMES

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PAGE_ENV = "BST_WEB_PAGE"
#: where `npm run build` in clients/web writes the page, beside this package in a source checkout
SOURCE_PAGE_DIR = Path(__file__).resolve().parents[1] / "clients" / "web" / "dist"
BUILD_HINT = "cd clients/web && npm ci && npm run build"
BUNDLE_PREFIX = "/bundle/"

MIME_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
    ".npy": "application/octet-stream", ".map": "application/json; charset=utf-8", ".png": "image/png",
    ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8", ".csv": "text/csv; charset=utf-8",
}
#: cross-origin isolation (SharedArrayBuffer, so onnxruntime-web can use threads) and no third-party embedding
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def resolve_page_dir(explicit: Path | None = None) -> Path:
    """--page, else $BST_WEB_PAGE, else clients/web/dist of this source checkout; refused in one line if unbuilt."""
    page = Path(explicit) if explicit else Path(os.environ[PAGE_ENV]) if os.environ.get(PAGE_ENV) else SOURCE_PAGE_DIR
    if not (page / "index.html").is_file():
        raise DataError(f"{page}: no built web page (index.html); build it with `{BUILD_HINT}`")
    return page


def taxonomy_json() -> bytes:
    """The class table in label order, as the page shows it (code, name, parent code and name)."""
    rows = [{"code": c.code, "name": c.name, "parent": c.parent, "parent_name": PARENT_NAMES[c.parent]} for c in CLASSES]
    return json.dumps(rows, ensure_ascii=False).encode("utf-8")


def check_servable(bundle: Bundle) -> None:
    """The page runs the graph-only chain: a bundle without its portable section cannot be used there."""
    contract = bundle.manifest.portable.get("contract")
    if not contract:
        raise BundleError(f"{bundle.root}: no portable graphs in this bundle (re-export it with `bst-train export`)")
    if contract != CONTRACT:
        raise BundleError(f"{bundle.root}: portable contract {contract}, the page runs {CONTRACT} (re-export the bundle)")


def bundle_routes(bundle: Bundle) -> dict[str, Path]:
    """URL path under /bundle/ -> file: the manifest and the files it lists, nothing else of the folder."""
    names = [MANIFEST_NAME] + [spec.file for spec in bundle.manifest.all_files()]
    return {name: bundle.path(name) for name in names}


class Handler(BaseHTTPRequestHandler):
    """GET/HEAD only; `page` files, `bundle` files by exact name, `/taxonomy.json`; 404 for anything else."""

    server_version = "bst-rt-web"
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, page: Path, routes: dict[str, Path], quiet: bool, **kwargs) -> None:
        self.page, self.routes, self.quiet = page, routes, quiet
        super().__init__(*args, **kwargs)

    def log_message(self, fmt: str, *args) -> None:
        if not self.quiet:
            super().log_message(fmt, *args)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _target(self) -> Path | bytes | None:
        path = unquote(urlsplit(self.path).path)
        if path == "/taxonomy.json":
            return taxonomy_json()
        if path.startswith(BUNDLE_PREFIX):
            return self.routes.get(path[len(BUNDLE_PREFIX):])
        rel = posixpath.normpath(path).lstrip("/") or "index.html"
        if rel.startswith("..") or "\\" in rel or "\0" in rel:
            return None
        file = (self.page / rel).resolve()
        return file if file.is_file() and self.page.resolve() in file.parents else None

    def _serve(self, body: bool) -> None:
        target = self._target()
        if target is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", body)
            return
        if isinstance(target, bytes):
            self._send(HTTPStatus.OK, target, MIME_TYPES[".json"], body)
            return
        ctype = MIME_TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        try:
            f = target.open("rb")
        except OSError:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", body)
            return
        with f:  # streamed: a graph of hundreds of MB is never held whole in memory here
            self._headers(HTTPStatus.OK, ctype, os.fstat(f.fileno()).st_size)
            if body:
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _headers(self, status: HTTPStatus, ctype: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-cache")
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: HTTPStatus, data: bytes, ctype: str, body: bool) -> None:
        self._headers(status, ctype, len(data))
        if body:
            self.wfile.write(data)


class Server(ThreadingHTTPServer):
    """A browser that leaves mid-download resets its connection: that is not an error of the server's."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def make_server(bundle_dir: Path, page_dir: Path | None = None, port: int = DEFAULT_PORT,
                quiet: bool = False) -> Server:
    """A server bound to 127.0.0.1 (port 0: any free one) for a bundle that passed its hash and contract checks."""
    bundle = load_bundle(Path(bundle_dir))
    check_servable(bundle)
    page = resolve_page_dir(page_dir)
    handler = partial(Handler, page=page, routes=bundle_routes(bundle), quiet=quiet)
    try:
        server = Server((HOST, port), handler)
    except OSError as exc:
        raise DataError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc} (pick another --port)") from None
    return server


def url_of(server: Server) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"


def serve(bundle_dir: Path, page_dir: Path | None = None, port: int = DEFAULT_PORT, open_browser: bool = False,
          log=print) -> None:
    """Serve until interrupted; with `open_browser`, open the page in the default browser once listening."""
    server = make_server(bundle_dir, page_dir, port)
    url = url_of(server)
    log(f"serving {bundle_dir} at {url} (127.0.0.1 only; Ctrl-C stops)")
    if open_browser:
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
