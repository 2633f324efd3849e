"""What a probe returns, and how socket errors read in a check's detail."""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    #: One short line for status and logs: "HTTP 503", "connection refused", "exit 1: ...".
    detail: str


def describe_os_error(exc: OSError) -> str:
    """ "connection refused", "no route to host"... rather than a Python exception repr."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return repr(exc)
