"""The fake provider's HTTP plumbing: a thread per kept-alive connection, each known to the
provider so that `stop` can close it, and a handler that writes what the provider answers."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeProvider

__all__ = ["Server"]


class Server(ThreadingHTTPServer):
    """One thread per connection (the SDKs keep theirs alive), each known to the provider so
    that `stop` can close it; quiet about clients that hang up."""

    daemon_threads = True
    request_queue_size = 128  # fifty clients connecting at once must not wait on SYN retries

    def __init__(self, provider: FakeProvider, port: int) -> None:
        self.provider = provider
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up, which can take seconds; no need here.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        handler = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.provider._opened(request, handler)
        handler.start()

    def shutdown_request(self, request: Any) -> None:
        self.provider._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hung up is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    disable_nagle_algorithm = True  # headers and body are two writes
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per request on stderr would drown a test run."""

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = self.headers.get("Content-Length", "0")
        raw = self.rfile.read(int(length)) if length.isdigit() else b""
        provider = self.server.provider
        reply = provider._answer(self.command, self.path, raw)
        if reply.delay > 0:
            provider._stopping.wait(reply.delay)
        self.send_response(reply.status)
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            self.send_header("Connection", "close")  # a body left unread ends the connection
        self.send_header("Content-Type", reply.content_type)
        size = len(reply.body) + sum(len(part) for _, part in reply.later)
        self.send_header("Content-Length", str(size))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        provider._write_later(self.wfile.write, reply)
