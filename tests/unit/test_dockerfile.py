"""What can be checked of the Dockerfile without a container engine: stages, copied paths,
entrypoints that are real console scripts, and no build tools in what ships."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|libc6-dev|python3-dev|cargo|rustc|git)\b"
)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def _stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: {line}"
            current = Stage(words[2], words[0])
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return stages


def _ancestry(stages: dict[str, Stage], name: str) -> list[Stage]:
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def _console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


def test_stages() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime", "agent", "operator"]
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(), re.M)
    assert arg and re.fullmatch(r"python:3\.11-slim(-\w+)?", arg.group(1)), "slim Python 3.11 base"
    assert stages["builder"].base == stages["runtime"].base == "${PYTHON_IMAGE}"
    assert any("pip wheel" in run for run in stages["builder"].args_of("RUN"))


@pytest.mark.parametrize("name", ["runtime", "agent", "operator"])
def test_no_build_tools_in_shipped_stages(name: str) -> None:
    for stage in _ancestry(_stages(), name):
        for run in stage.args_of("RUN"):
            assert not BUILD_TOOLS.search(run), f"{stage.name}: {run}"
        for copy in stage.args_of("COPY"):
            assert copy.startswith("--from=builder /wheels"), f"{stage.name} copies sources: {copy}"


def test_copied_paths_exist_and_are_not_ignored() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    for stage in _stages().values():
        for copy in stage.args_of("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = shlex.split(copy)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert source.rstrip("/") in kept, f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize(
    ("stage", "script"), [("agent", "vipkeeper-agent"), ("operator", "vipkeeper-operator")]
)
def test_entrypoints_are_console_scripts(stage: str, script: str) -> None:
    (entry,) = _stages()[stage].args_of("ENTRYPOINT")
    argv = json.loads(entry)
    assert argv[:2] == ["tini", "--"], "tini as PID 1 reaps the scripts the agent spawns"
    assert argv[2] == script
    module, _, function = _console_scripts()[script].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_chart_commands_are_console_scripts() -> None:
    scripts = set(_console_scripts())
    templates = ROOT / "charts" / "vipkeeper" / "templates"
    commands = re.findall(
        r"command: (\[.*\])", "".join(p.read_text() for p in templates.glob("*.yaml"))
    )
    used = {word for c in commands for word in json.loads(c) if word.startswith("vipkeeper-")}
    assert used == {"vipkeeper-agent", "vipkeeper-operator"} <= scripts


def test_users_and_labels() -> None:
    stages = _stages()
    (user,) = stages["operator"].args_of("USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert not stages["agent"].args_of("USER"), "the agent needs uid 0 for its two capabilities"
    labels = " ".join(stages["runtime"].args_of("LABEL"))
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
