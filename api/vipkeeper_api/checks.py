"""Health check definitions: one model per kind, selected by ``kind``.

A check is defined once under the spec's ``checks`` and referenced by name (keepalived's
``vrrp_script`` + ``track_script``), so one nginx check can drive several instances. Exec checks
name a script in the agent's allowlist directory; a command line never comes from the assignment.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from vipkeeper_api.base import IPAddress, Model, dns_label, parse_address

#: keepalived's weight range for track_script / track_interface.
MAX_WEIGHT = 253
SCRIPT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
HTTP_PATH_RE = re.compile(r"^/[\x21-\x7e]*$")
HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")
_DIGEST_SIZES = {"md5": 32, "sha1": 40, "sha256": 64}


class _CheckBase(Model):
    name: str
    #: Seconds between the end of one run and the start of the next.
    interval: float = Field(default=2.0, ge=0.05, le=3600.0)
    #: A run that takes longer fails (and an exec check's process is killed).
    timeout: float = Field(default=1.0, ge=0.01, le=300.0)
    #: Consecutive successes to turn OK, consecutive failures to turn FAILED (keepalived rise/fall).
    rise: int = Field(default=1, ge=1, le=100)
    fall: int = Field(default=1, ge=1, le=100)
    #: > 0 adds on success, < 0 subtracts on failure, 0 puts the instance in FAULT on failure.
    weight: int = Field(default=0, ge=-MAX_WEIGHT, le=MAX_WEIGHT)
    #: Start FAILED instead of OK until the first result (keepalived init_fail).
    init_fail: bool = False
    #: Seconds between runs while failures accumulate towards ``fall`` (keepalived
    #: delay_before_retry); default: ``interval``.
    retry_interval: float | None = Field(default=None, ge=0.05, le=3600.0)
    #: The first run starts at a random moment within this many seconds (keepalived warmup), so
    #: that many checks started together do not run together.
    warmup: float | None = Field(default=None, ge=0.0, le=3600.0)

    _dns = field_validator("name")(dns_label)


class ExecCheck(_CheckBase):
    kind: Literal["exec"]
    #: A file name inside the agent's script directory (no paths).
    script: str
    args: tuple[str, ...] = Field(default=(), max_length=32)

    @field_validator("script")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not SCRIPT_NAME_RE.match(value) or value in (".", ".."):
            raise ValueError(
                f"{value!r} is not a script name; give the file name of a script in the agent's "
                "script directory (letters, digits, '_', '.', '-'; no '/'), not a path or command"
            )
        return value

    @field_validator("args")
    @classmethod
    def _bounded_args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            if len(arg) > 1024 or "\x00" in arg:
                raise ValueError("each argument must be at most 1024 characters, without NUL")
        return value


class HttpCheck(_CheckBase):
    kind: Literal["http", "https"]
    #: Where to connect; the Host header and TLS server name come from ``host``.
    address: IPAddress
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str = "/"
    host: str | None = None
    #: Accepted status codes; empty means any 2xx (keepalived's default).
    expect_status: tuple[int, ...] = Field(default=(), max_length=32)
    #: ``md5:<hex>``, ``sha1:<hex>`` or ``sha256:<hex>`` of the body; bare 32 hex digits is md5
    #: (keepalived's HTTP_GET digest).
    digest: str | None = None
    tls_verify: bool = True
    #: Bytes of body read at most (for the digest); longer bodies fail.
    max_body: int = Field(default=1024 * 1024, ge=0, le=16 * 1024 * 1024)

    _addr = field_validator("address", mode="before")(parse_address)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.kind == "https" else 80

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if len(value) > 2048 or not HTTP_PATH_RE.match(value):
            raise ValueError(
                f"{value!r} is not an HTTP path; it starts with '/' and has no spaces "
                "or control characters (percent-encode them)"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not HOST_RE.match(value):
            raise ValueError(f"{value!r} is not a host name (letters, digits, '.', '-', ':')")
        return value

    @field_validator("expect_status")
    @classmethod
    def _codes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for code in value:
            if not 100 <= code <= 599:
                raise ValueError(f"status code {code} is not an HTTP status (100-599)")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        algo, _, hexdigest = value.rpartition(":")
        algo = algo.lower() or "md5"
        hexdigest = hexdigest.lower()
        size = _DIGEST_SIZES.get(algo)
        if size is None or len(hexdigest) != size or not re.fullmatch(r"[0-9a-f]+", hexdigest):
            raise ValueError(
                f"{value!r} is not a digest; write md5:<32 hex>, sha1:<40 hex> or sha256:<64 hex> "
                "(e.g. the output of `sha256sum` over the expected body)"
            )
        return f"{algo}:{hexdigest}"

    @model_validator(mode="after")
    def _tls_only_for_https(self) -> Self:
        if self.kind == "http" and "tls_verify" in self.model_fields_set:
            raise ValueError("tlsVerify applies to kind: https only; remove it or use https")
        return self

    def body_matches(self, body: bytes) -> bool:
        if self.digest is None:
            return True
        algo, _, expected = self.digest.partition(":")
        return hashlib.new(algo, body).hexdigest() == expected

    def status_ok(self, status: int) -> bool:
        return status in self.expect_status if self.expect_status else 200 <= status <= 299


class TcpCheck(_CheckBase):
    kind: Literal["tcp"]
    address: IPAddress
    port: int = Field(ge=1, le=65535)

    _addr = field_validator("address", mode="before")(parse_address)


class PingCheck(_CheckBase):
    """ICMP echo to an address, typically the gateway: a node that cannot reach it demotes itself
    instead of fighting for the VIP from the wrong side of a partition."""

    kind: Literal["ping"]
    address: IPAddress

    _addr = field_validator("address", mode="before")(parse_address)


class SmtpCheck(_CheckBase):
    """Connect, expect a 220 banner, HELO, expect 250, QUIT (keepalived SMTP_CHECK)."""

    kind: Literal["smtp"]
    address: IPAddress
    port: int = Field(default=25, ge=1, le=65535)
    helo_name: str = Field(default="vipkeeper", pattern=r"^[A-Za-z0-9.-]{1,255}$")

    _addr = field_validator("address", mode="before")(parse_address)


Check = Annotated[
    ExecCheck | HttpCheck | TcpCheck | PingCheck | SmtpCheck, Field(discriminator="kind")
]
CHECK_KINDS = ("exec", "http", "https", "tcp", "ping", "smtp")
