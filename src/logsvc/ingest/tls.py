"""One step of a non-blocking TLS handshake, for every connection that runs one on the loop.

Stream connections (``--listen-tls``) and HTTP connections (``--metrics-tls``) register
EPOLLIN and EPOLLOUT edge-triggered and call ``handshake_step`` on each edge until it is done.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import ssl


def handshake_step(sock: ssl.SSLSocket) -> bool | Exception:
    """True once the handshake is done, False while it waits for an edge, else the failure."""
    try:
        sock.do_handshake()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False  # EPOLLIN and EPOLLOUT are both registered: the next edge resumes
    except (ssl.SSLError, OSError) as exc:
        return exc
    return True
