"""A forwarding HTTP proxy for the tests: what an institute's proxy does with plain http.

It takes requests in absolute form (``GET http://host:port/path HTTP/1.1``), forwards
them to their host and streams the answer back, keeping connections to its clients
alive.  It counts what it forwarded, by host, and the headers it was given, so a
test can tell that every request went through it, and that no credential was
meant for the proxy itself.
"""
from __future__ import annotations

import collections
import http.client
import http.server
import socketserver
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "proxy-connection"}


class ForwardingProxy:
    """``with ForwardingProxy() as proxy:`` ... ``proxy.url``, ``proxy.requests``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()  # by host:port
        self.proxy_headers = 0  # Proxy-Authorization headers received
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                target = urllib.parse.urlsplit(self.path)
                if not target.hostname:
                    self.send_error(400, "a proxy takes absolute URLs")
                    return
                with owner.lock:
                    owner.requests[target.netloc] += 1
                    owner.proxy_headers += "Proxy-Authorization" in self.headers
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(target.hostname, target.port or 80,
                                                  timeout=60)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request("GET", path, headers=headers)
                    answer = conn.getresponse()
                    body = answer.read()
                except OSError:
                    self.send_error(502, "upstream failed")
                    return
                finally:
                    conn.close()
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.proxy_headers = 0

    def __enter__(self) -> "ForwardingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
