"""The agent's Kubernetes edge against the API emulator: the assignment source (cache file), the
status reporter and the Events. The VRRP agent itself is not run here (it needs netlink and root;
the netns tier runs it): these are the parts between it and the API."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from support.kapi import KubeAPI, wait_for
from vipkeeper_agent.instance import InstanceRunner
from vipkeeper_agent.kube.agent import Connector, KubeAgent
from vipkeeper_agent.kube.assignment import OWNERS_ANNOTATION, render
from vipkeeper_agent.kube.events import EventSink, Transition
from vipkeeper_agent.kube.pacing import EventLimiter, Pacer
from vipkeeper_agent.kube.report import node_status
from vipkeeper_agent.kube.reporter import StatusReporter
from vipkeeper_agent.kube.source import AssignmentSource
from vipkeeper_agent.supervisor import AgentOptions
from vipkeeper_agent.tracking import Assessment
from vipkeeper_agent.vrrp.packet import Advertisement
from vipkeeper_api import NodeAssignmentSpec, load_spec, parse_spec
from vipkeeper_api.resources import API_VERSION, NodeAssignmentStatus

pytestmark = [pytest.mark.operator, pytest.mark.timeout(30)]

T = TypeVar("T")
NODE = "n1"
FAST = (0.05, 0.2)  # backoff: tests must not wait out production delays


def instance(name: str, vrid: int, address: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "vrid": vrid, "addresses": [address], **extra}


def assignment(*instances: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NodeAssignment",
        "metadata": {"name": NODE, **meta},
        "spec": {"instances": list(instances)},
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cached(path: Path) -> list[str]:
    """The instance names the cache file holds (and it must load as a spec)."""
    return [i.name for i in load_spec(path.read_bytes()).instances]


@pytest.fixture
def source_for(kapi: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., AssignmentSource]]:
    started: list[AssignmentSource] = []

    def make(api: client.ApiClient | None = None, **kwargs: Any) -> AssignmentSource:
        kwargs.setdefault("backoff", FAST)
        source = AssignmentSource(
            api or kapi.api_client(), NODE, tmp_path / "cache" / "assignment.yaml", **kwargs
        )
        started.append(source)
        return source

    yield make
    for source in started:
        source.stop(timeout=2)


# --- source -------------------------------------------------------------------------------


def test_source_follows_create_edit_bad_edit_delete(
    kapi: KubeAPI, source_for: Callable[..., AssignmentSource]
) -> None:
    problems: list[str] = []
    source = source_for(on_problem=problems.append)
    path = source.cache
    source.start()
    # Not there yet: the node runs nothing (and says so explicitly in the file).
    wait_for(lambda: path.exists() and cached(path) == [], what="empty cache")
    kapi.create(assignment(instance("a", 1, "192.0.2.1")))
    # The file is replaced first, then the source's own record: wait for both.
    wait_for(lambda: cached(path) == ["a"] and source.generation == 1, what="created")
    kapi.patch("NodeAssignment", NODE, {"spec": {"instances": [instance("b", 2, "192.0.2.2")]}})
    wait_for(lambda: cached(path) == ["b"], what="edited")
    good = path.read_bytes()
    kapi.patch("NodeAssignment", NODE, {"spec": {"instances": [instance("c", 300, "192.0.2.3")]}})
    wait_for(lambda: problems, what="bad edit reported")
    assert path.read_bytes() == good  # the last good spec keeps running
    assert "generation 3 rejected" in problems[0] and "vrid" in problems[0]
    assert source.problem == problems[0] and source.generation == 2
    # A status write bumps the resourceVersion, not the spec: the file is not rewritten.
    writes = source.counts["writes"]
    kapi.patch_status("NodeAssignment", NODE, {"instances": []})
    kapi.patch("NodeAssignment", NODE, {"spec": {"instances": [instance("d", 4, "192.0.2.4")]}})
    wait_for(lambda: cached(path) == ["d"] and source.problem is None, what="fixed")
    assert source.counts["writes"] == writes + 1
    kapi.delete("NodeAssignment", NODE)
    wait_for(lambda: cached(path) == [], what="deleted: resign everything")
    assert b"instances: []" in path.read_bytes()


def test_source_survives_watch_close_and_410(
    kapi: KubeAPI, source_for: Callable[..., AssignmentSource]
) -> None:
    kapi.create(assignment(instance("a", 1, "192.0.2.1")))
    source = source_for()
    source.start()
    wait_for(lambda: source.cache.exists() and cached(source.cache) == ["a"], what="listed")
    kapi.close_watches()  # an API server restart: resume from the resourceVersion
    kapi.patch("NodeAssignment", NODE, {"spec": {"instances": [instance("b", 2, "192.0.2.2")]}})
    wait_for(lambda: cached(source.cache) == ["b"], what="after reconnect")
    assert source.counts["lists"] == 1
    other = assignment()
    other["metadata"]["name"] = "n2"
    kapi.create(other)  # another node's change: the global resourceVersion moves past ours
    kapi.compact()  # history gone: the resumed watch gets 410 and the source re-lists
    kapi.close_watches()
    kapi.patch("NodeAssignment", NODE, {"spec": {"instances": [instance("c", 3, "192.0.2.3")]}})
    wait_for(lambda: cached(source.cache) == ["c"], what="after 410")
    assert source.counts["lists"] == 2
    assert source.connected


def test_source_resumes_from_cache_with_the_api_down(
    tmp_path: Path, source_for: Callable[..., AssignmentSource]
) -> None:
    down = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{closed_port()}"))
    spec = parse_spec({"instances": [instance("a", 1, "192.0.2.1")]})
    cache = tmp_path / "cache" / "assignment.yaml"
    cache.parent.mkdir()
    cache.write_bytes(render(spec, NODE, 7))
    before = cache.read_bytes()
    source = source_for(down)
    started = time.monotonic()
    assert source.load_cache() == spec  # at once, before any request
    assert source.generation == 7
    source.start()
    wait_for(lambda: source.counts["errors"] >= 2, what="retrying with backoff")
    assert time.monotonic() - started < 2
    assert not source.connected and "Connection" in (source.last_error or "")
    assert cache.read_bytes() == before


def test_source_without_cache_or_api_starts_empty(
    source_for: Callable[..., AssignmentSource],
) -> None:
    down = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{closed_port()}"))
    source = source_for(down)
    assert source.load_cache() is None
    source.start()
    wait_for(lambda: source.counts["errors"] >= 1, what="trying")
    assert not source.cache.exists()  # nothing is written until the API says something


# --- status reporter ----------------------------------------------------------------------


class Doc:
    """A stand-in for the agent's status document that tests can change."""

    def __init__(self) -> None:
        self.serial = 0

    def __call__(self, now: float) -> dict[str, Any]:
        state = "MASTER" if self.serial % 2 else "BACKUP"
        return {
            "updated": f"{now}",
            "observedGeneration": self.serial,
            "instances": [{"name": "a", "state": state, "priority": 100}],
        }


def status_writes(kapi: KubeAPI) -> int:
    return sum(1 for r in kapi.requests() if r.method == "PATCH" and str(r.url).endswith("/status"))


async def until(predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return value


def reported(kapi: KubeAPI) -> dict[str, Any]:
    obj = kapi.get("NodeAssignment", NODE) or {}
    return dict(obj.get("status") or {})


@pytest.mark.asyncio
async def test_reporter_coalesces_a_burst(kapi: KubeAPI) -> None:
    kapi.create(assignment())
    doc = Doc()
    reporter = StatusReporter(
        kapi.api_client(), NODE, doc, pacer=Pacer(min_interval=0.5, heartbeat=30.0), poll=0.1
    )
    reporter.start()
    try:
        await until(lambda: reporter.writes == 1, what="first write")
        for _ in range(20):  # a flapping instance: 20 changes in 0.2 s
            doc.serial += 1
            reporter.poke()
            await asyncio.sleep(0.01)
        await until(lambda: reported(kapi).get("observedGeneration") == 20, what="latest state")
        await asyncio.sleep(0.6)
        assert reporter.writes <= 3  # the first, then at most two for the whole burst
        assert status_writes(kapi) == reporter.writes
        assert reported(kapi)["instances"][0]["state"] == "BACKUP"
    finally:
        await reporter.stop(final=False)


@pytest.mark.asyncio
async def test_reporter_heartbeat_and_catch_up_after_outage(kapi: KubeAPI) -> None:
    kapi.create(assignment())
    doc = Doc()
    api = kapi.api_client()
    pacer = Pacer(min_interval=0.1, heartbeat=0.3, retry=(0.05, 0.1))
    reporter = StatusReporter(api, NODE, doc, pacer=pacer, poll=0.05)
    reporter.start()
    try:
        await until(lambda: reporter.writes >= 3, what="heartbeats with nothing changed")
        pacer.heartbeat = 30.0  # from here on, count only the writes that changes cause
        up = api.configuration.host
        api.configuration.host = f"http://127.0.0.1:{closed_port()}"  # the API goes away
        doc.serial += 1
        reporter.poke()
        await until(lambda: reporter.failures >= 2, what="failing")
        for _ in range(9):
            doc.serial += 1
            reporter.poke()
            await asyncio.sleep(0.01)
        writes, failures = status_writes(kapi), reporter.failures
        api.configuration.host = up
        await until(lambda: reported(kapi).get("observedGeneration") == 10, what="caught up")
        assert status_writes(kapi) == writes + 1  # the latest state, once: not a replay
        assert reporter.last_error is None and failures >= 2
    finally:
        await reporter.stop(final=False)


@pytest.mark.asyncio
async def test_reporter_waits_for_the_object(kapi: KubeAPI) -> None:
    """No NodeAssignment yet (the operator has not rendered the node): retry, never create."""
    reporter = StatusReporter(
        kapi.api_client(), NODE, Doc(), pacer=Pacer(retry=(0.05, 0.1)), poll=0.05
    )
    reporter.start()
    try:
        await until(lambda: reporter.failures >= 1, what="404")
        assert "does not exist" in (reporter.last_error or "")
        kapi.create(assignment())
        await until(lambda: reported(kapi).get("instances"), what="written once it exists")
    finally:
        await reporter.stop(final=False)


# --- the agent's document through the reporter --------------------------------------------


@pytest.mark.asyncio
async def test_connector_reports_the_applied_generation(
    kapi: KubeAPI, tmp_path: Path, source_for: Callable[..., AssignmentSource]
) -> None:
    kapi.create(assignment(instance("a", 1, "192.0.2.1")))
    source = source_for()
    source.start()
    await until(lambda: source.generation == 1, what="source has generation 1")
    options = AgentOptions(source.cache, tmp_path / "agent.sock")
    running = KubeAgent(options, NodeAssignmentSpec())  # not started: no netlink here
    connector = Connector(running, source, kapi.api_client())
    assert connector.build(time.time()) is None  # nothing to report before the agent runs
    running._loaded_at = 1.0  # as run() marks it started
    doc = connector.build(time.time())
    assert doc is not None and "observedGeneration" not in doc  # generation 1 not loaded yet
    running.spec = load_spec(source.cache.read_bytes())  # what its reload does
    doc = connector.build(time.time())
    assert doc is not None and doc["observedGeneration"] == 1
    NodeAssignmentStatus.model_validate(doc)
    assert running.status()["kubernetes"]["source"]["generation"] == 1


class QuietAgent(KubeAgent):
    """The Kubernetes-mode agent with its network effects faked (no netlink, no sockets)."""

    def send_advertisement(self, runner: InstanceRunner, advert: Advertisement) -> None:
        pass

    async def add_addresses(self, runner: InstanceRunner, addresses: Sequence[Any]) -> None:
        pass

    async def remove_addresses(self, runner: InstanceRunner, addresses: Sequence[Any]) -> None:
        pass

    def announce(self, runner: InstanceRunner, addresses: Sequence[Any]) -> None:
        pass

    def stop_announce(self, runner: InstanceRunner) -> None:
        pass


@pytest.mark.asyncio
async def test_takeover_is_timed_from_the_last_advert_heard(tmp_path: Path) -> None:
    """A backup that stops hearing its master takes over after Master_Down_Interval; the agent
    reports that as the takeover's duration and hands each transition on for Events."""
    spec = parse_spec(
        {"instances": [instance("a", 1, "192.0.2.10/24", advertInterval=0.1, priority=100)]}
    )
    agent = QuietAgent(AgentOptions(tmp_path / "a.yaml", tmp_path / "a.sock"), spec)
    seen: list[Transition] = []
    agent.on_transition = seen.append
    loop = asyncio.get_running_loop()
    runner = InstanceRunner(
        spec.instances[0], "eth0", 2, ipaddress.ip_address("192.0.2.2"), agent, loop
    )
    agent.runners["a"] = runner
    runner.start(Assessment(100), maintenance=False)
    await until(lambda: seen, what="INIT -> BACKUP")
    master = Advertisement(3, 1, 200, 10, (ipaddress.ip_address("192.0.2.10"),))
    runner.on_advertisement(master, ipaddress.ip_address("192.0.2.3"))  # then silence
    await until(lambda: agent.durations.get("a"), what="takeover")
    # Master_Down_Interval = 3 x 0.1 s + (256 - 100) / 256 x 0.1 s = 361 ms
    assert 361 <= agent.durations["a"] < 600
    assert [(t.from_state, t.to_state) for t in seen] == [("INIT", "BACKUP"), ("BACKUP", "MASTER")]
    assert seen[1].reason == "master down" and seen[1].duration_ms == agent.durations["a"]
    doc = node_status(
        agent.status(), spec, observed_generation=None, now=time.time(), durations=agent.durations
    )
    assert doc["instances"][0]["lastTransition"]["durationMs"] == agent.durations["a"]
    await runner.stop()


# --- Events -------------------------------------------------------------------------------


def events(kapi: KubeAPI, namespace: str = "default") -> list[dict[str, Any]]:
    return [
        e for e in kapi.list("Event", namespace) if e["source"]["component"] == "vipkeeper-agent"
    ]


@pytest.mark.asyncio
async def test_events_on_transitions(kapi: KubeAPI) -> None:
    owners = {"ns-web": {"namespace": "default", "name": "web", "uid": "vip-uid"}}
    created = kapi.create(assignment(annotations={OWNERS_ANNOTATION: json.dumps(owners)}))
    uid = created["metadata"]["uid"]
    sink = EventSink(
        kapi.api_client(),
        NODE,
        lambda: (uid, owners),
        limiter=EventLimiter(burst=3, every=60.0),
    )
    sink.start()
    try:
        now = time.time()
        sink.transition(Transition("ns-web", 51, "BACKUP", "MASTER", "master down", now, 3120.0))
        sink.transition(Transition("other", 52, "MASTER", "FAULT", "interface down", now))
        sink.transition(Transition("other", 52, "FAULT", "INIT", "shutdown", now))  # no Event
        await until(lambda: len(events(kapi)) == 2, what="two Events")
        by_reason = {e["reason"]: e for e in events(kapi)}
        master = by_reason["BecameMaster"]
        assert master["involvedObject"]["kind"] == "VirtualIP"
        assert master["involvedObject"]["uid"] == "vip-uid"
        assert "3120 ms" in master["message"] and master["type"] == "Normal"
        fault = by_reason["EnteredFault"]
        assert fault["type"] == "Warning"
        assert fault["involvedObject"] == {
            "apiVersion": API_VERSION, "kind": "NodeAssignment", "name": NODE, "uid": uid,
        }  # fmt: skip
        for i in range(10):  # flapping: the limiter lets the burst through, then holds back
            sink.transition(Transition("ns-web", 51, "MASTER", "BACKUP", f"flap {i}", now))
        await until(lambda: sink.state()["queued"] == 0, what="posted")
        flaps = [e for e in events(kapi) if "flap" in e["message"]]
        assert len(flaps) == 2 and sink.suppressed == 8
        sink.problem("NodeAssignment/n1 generation 3 rejected")
        await until(lambda: any(e["reason"] == "SpecRejected" for e in events(kapi)), what="spec")
    finally:
        await sink.stop()
