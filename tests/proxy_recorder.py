"""A proxy.py plugin for the proxy tests: one line per request the proxy is asked to forward.

proxy.py loads it by name (``--plugins tests.proxy_recorder.Recorder``) in its own process, which
appends to the file named by ``ASYNCDL_PROXY_LOG``: ``CONNECT host:port`` for each https tunnel
(what goes through it is encrypted, so one line per connection) and ``GET http://host:port/path``
for each plain http request (one per request, keep-alive or not).
"""

from __future__ import annotations

import os

from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

LOG_VARIABLE = "ASYNCDL_PROXY_LOG"


def _note(line: str) -> None:
    with open(os.environ[LOG_VARIABLE], "a") as log:
        log.write(line + "\n")


class Recorder(HttpProxyBasePlugin):
    def handle_client_request(self, request: HttpParser) -> HttpParser | None:
        method = (request.method or b"").decode()
        target = f"{(request.host or b'').decode()}:{request.port}"
        if method == "CONNECT":
            _note(f"CONNECT {target}")
        else:
            _note(f"{method} http://{target}{(request.path or b'').decode()}")
        return request
