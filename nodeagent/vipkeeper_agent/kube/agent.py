"""Kubernetes mode wired together: the agent runs from the cache file, the source keeps that file
equal to the NodeAssignment, the reporter and the Event sink tell the API what the node does.

The agent never waits for the API: it starts from the cache (or empty) at once, and the API's
absence only delays reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from vipkeeper_agent.instance import InstanceRunner
from vipkeeper_agent.kube.events import EventSink, Transition
from vipkeeper_agent.kube.report import node_status
from vipkeeper_agent.kube.reporter import StatusReporter
from vipkeeper_agent.kube.source import AssignmentSource
from vipkeeper_agent.supervisor import Agent, AgentOptions
from vipkeeper_agent.vrrp import fsm
from vipkeeper_api import NodeAssignmentSpec

log = logging.getLogger("vipkeeper.kube")


class KubeAgent(Agent):
    """The agent plus what Kubernetes mode needs to see of it: each transition as it completes
    (for Events and a prompt status write), with the takeover duration the runner measured."""

    def __init__(self, options: AgentOptions, spec: NodeAssignmentSpec) -> None:
        super().__init__(options, spec)
        #: instance -> ms from the last advert heard to the VIPs in place, for its last takeover
        self.durations: dict[str, float] = {}
        self.on_transition: Callable[[Transition], None] = lambda t: None
        self.extra_status: Callable[[], dict[str, Any]] = dict
        self._reloading: set[asyncio.Task[bool]] = set()

    def transitioned(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        super().transitioned(runner, transition)
        # The runner logs each transition's takeover (last advert of the master it deferred to
        # -> VIPs in place) just before this call.
        log_ = runner.transition_log
        record = log_[-1] if log_ and log_[-1].transition is transition else None
        duration = None
        if record is not None and record.takeover is not None:
            duration = round(record.takeover * 1000, 3)
        if duration is None:
            self.durations.pop(runner.name, None)
        else:
            self.durations[runner.name] = duration
        self.on_transition(
            Transition(
                instance=runner.name,
                vrid=runner.spec.vrid,
                from_state=str(transition.from_state),
                to_state=str(transition.to_state),
                reason=transition.reason,
                at=runner.wall(transition.at),
                duration_ms=duration,
            )
        )

    def file_changed(self) -> None:
        """The source replaced the file: reload now rather than at the next poll (up to a
        second later). Before the agent has started, its own start-up reads the file anyway."""
        if self.started:
            task = asyncio.get_running_loop().create_task(self.reload("NodeAssignment changed"))
            # The loop keeps only a weak reference: hold the task until it is done.
            self._reloading.add(task)
            task.add_done_callback(self._reloading.discard)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["kubernetes"] = self.extra_status()
        return out


class Connector:
    """Binds a KubeAgent to the API: the status document it reports, and the Events."""

    def __init__(self, agent: KubeAgent, source: AssignmentSource, api: client.ApiClient) -> None:
        self.agent, self.source = agent, source
        self._applied: int | None = source.generation if source.spec == agent.spec else None
        self.reporter = StatusReporter(api, source.node, self.build)
        self.events = EventSink(api, source.node, lambda: (source.uid, source.owners))
        agent.on_transition = self._on_transition
        agent.extra_status = self.state

    def observed_generation(self) -> int | None:
        """The generation of the spec the agent runs: the source's, once the agent has loaded it
        (it re-reads the file within a second; it may also refuse it)."""
        spec, generation = self.source.current()
        if spec is not None and spec == self.agent.spec:
            self._applied = generation
        return self._applied

    def build(self, now: float) -> Mapping[str, Any] | None:
        if not self.agent.started:
            return None
        snapshot = self.agent.status()
        return node_status(
            snapshot,
            self.agent.spec,
            observed_generation=self.observed_generation(),
            now=now,
            durations=self.agent.durations,
            source_problem=self.source.problem,
        )

    def _on_transition(self, t: Transition) -> None:
        self.events.transition(t)
        self.reporter.poke()

    def on_problem(self, problem: str) -> None:
        """From the source's thread."""
        self.events.problem(problem)

    def state(self) -> dict[str, Any]:
        return {
            "source": self.source.state(),
            "observedGeneration": self._applied,
            "reporter": self.reporter.state(),
            "events": self.events.state(),
        }

    def start(self) -> None:
        self.reporter.start()
        self.events.start()

    async def stop(self) -> None:
        await self.reporter.stop(final=True)
        await self.events.stop()


async def run_kubernetes(
    options: AgentOptions,
    node: str,
    api: client.ApiClient,
    accept: Callable[[NodeAssignmentSpec], list[str]],
) -> None:
    loop = asyncio.get_running_loop()
    connector: Connector | None = None

    def on_problem(problem: str) -> None:
        if connector is not None:
            loop.call_soon_threadsafe(connector.on_problem, problem)

    def on_change() -> None:
        if connector is not None:
            loop.call_soon_threadsafe(connector.agent.file_changed)

    source = AssignmentSource(
        api,
        node,
        options.config_path,
        accept=accept,
        on_change=on_change,
        on_problem=on_problem,
    )
    spec = source.load_cache()
    if spec is None:
        log.info(
            "event=no_cache path=%s detail='starting empty until the API answers'", source.cache
        )
    else:
        log.info("event=cache_loaded path=%s generation=%s", source.cache, source.generation)
    agent = KubeAgent(options, spec or NodeAssignmentSpec())
    connector = Connector(agent, source, api)
    agent.ready = lambda: agent.started and connector.observed_generation() is not None
    source.start()
    connector.start()
    try:
        await agent.run()
    finally:
        await asyncio.to_thread(source.stop)
        with contextlib.suppress(Exception):
            await connector.stop()


__all__ = ["Connector", "KubeAgent", "run_kubernetes"]
