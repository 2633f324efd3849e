"""What every model of the schema shares: strictness, camelCase keys, address and name parsing."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        str_strip_whitespace=True,
    )


def parse_address(value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an IP address such as 192.0.2.11 or fe80::1")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address; write e.g. 192.0.2.11 or 2001:db8::11"
        ) from None


def dns_label(cls: object, value: str) -> str:
    """A Kubernetes-style name: it ends up in logs, status keys and metric labels."""
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name; use lower-case letters, digits and '-' "
            "(at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


#: An advert interval in seconds: exact (centiseconds on the wire) in Python, a JSON *number* in
#: documents (the CRDs type it `number`; pydantic would otherwise write Decimal as a string).
Seconds = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
