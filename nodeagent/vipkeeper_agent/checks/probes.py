"""One probe per check kind, each an ``async () -> ProbeResult``.

Probes report what they saw and never raise for what a server or script does; they are run
under the scheduler's hard timeout, and free their sockets and processes when cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Final, assert_never

from vipkeeper_agent.checks.http import HttpProbe, probe_http
from vipkeeper_agent.checks.icmp import Pinger
from vipkeeper_agent.checks.result import ProbeResult, describe_os_error
from vipkeeper_agent.checks.smtp import SmtpProbe, probe_smtp
from vipkeeper_agent.scripts import ScriptPolicy, run_script
from vipkeeper_api.checks import Check, ExecCheck, HttpCheck, PingCheck, SmtpCheck, TcpCheck

__all__ = [
    "EXEC_GRACE",
    "Probe",
    "ProbeResult",
    "hard_timeout",
    "make_probe",
    "probe_exec",
    "probe_http",
    "probe_ping",
    "probe_smtp",
    "probe_tcp",
    "run_probe",
    "timeout_detail",
]

log = logging.getLogger("vipkeeper.checks")

Probe = Callable[[], Awaitable[ProbeResult]]

#: Extra time an exec check gets past its own timeout: ``run_script`` enforces the timeout
#: itself (killing the process group, keeping the output), the scheduler's is the backstop.
EXEC_GRACE: Final = 1.0


async def probe_tcp(check: TcpCheck) -> ProbeResult:
    family = socket.AF_INET6 if check.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (str(check.address), check.port))
    except OSError as exc:
        return ProbeResult(False, describe_os_error(exc))
    finally:
        sock.close()
    return ProbeResult(True, "connected")


async def probe_ping(check: PingCheck, pinger: Pinger) -> ProbeResult:
    return await pinger.ping(check.address)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


async def probe_exec(check: ExecCheck, policy: ScriptPolicy | None) -> ProbeResult:
    if policy is None:
        return ProbeResult(False, "exec checks are disabled: the agent has no script directory")
    result = await run_script(policy, check.script, check.args, check.timeout)
    if result.error is not None:
        return ProbeResult(False, result.error)
    if result.timed_out:
        return ProbeResult(False, f"timeout after {check.timeout:g}s")
    if result.exit_code == 0:
        return ProbeResult(True, "exit 0")
    status = (
        f"killed by signal {-result.exit_code}"
        if result.exit_code is not None and result.exit_code < 0
        else f"exit {result.exit_code}"
    )
    line = _first_line(result.output)
    return ProbeResult(False, f"{status}: {line}" if line else status)


def make_probe(check: Check, *, script_policy: ScriptPolicy | None, pinger: Pinger) -> Probe:
    """The probe of ``check``, with whatever can be prepared once (an HTTP request) prepared."""
    if isinstance(check, HttpCheck):
        return HttpProbe(check)
    if isinstance(check, TcpCheck):
        return lambda: probe_tcp(check)
    if isinstance(check, PingCheck):
        return lambda: pinger.ping(check.address)
    if isinstance(check, SmtpCheck):
        return SmtpProbe(check)
    if isinstance(check, ExecCheck):
        return lambda: probe_exec(check, script_policy)
    assert_never(check)


def hard_timeout(check: Check) -> float:
    """How long the scheduler lets one run of ``check`` take before cancelling it."""
    return check.timeout + EXEC_GRACE if isinstance(check, ExecCheck) else check.timeout


def timeout_detail(check: Check) -> str:
    if isinstance(check, PingCheck):
        return f"no reply within {check.timeout:g}s"
    return f"timeout after {check.timeout:g}s"


async def run_probe(check: Check, probe: Probe) -> ProbeResult:
    """One run of ``probe`` under the check's hard timeout; whatever happens, a result."""
    try:
        # asyncio.timeout rather than wait_for: Python 3.11's wait_for wraps the coroutine in
        # one more task per run.
        async with asyncio.timeout(hard_timeout(check)):
            return await probe()
    except TimeoutError:
        return ProbeResult(False, timeout_detail(check))
    except Exception as exc:
        log.warning("event=check_error check=%s error=%r", check.name, exc, exc_info=True)
        return ProbeResult(False, repr(exc))
