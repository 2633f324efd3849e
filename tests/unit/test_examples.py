"""Every shipped standalone example parses with the same loader the agent uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipkeeper_agent.cli import main
from vipkeeper_api import load_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "standalone").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads(path: Path) -> None:
    spec = load_spec(path.read_bytes(), str(path))
    assert spec.instances


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_check_config_accepts_example(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_rejects_with_path_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("instances:\n  - {name: a, vrid: 300, addresses: [192.0.2.1]}\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "instances[0].vrid" in err and "got 300" in err
