"""Every shipped standalone example parses with the same loader the agent uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipkeeper_agent.cli import main
from vipkeeper_api import load_spec

ROOT = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted((ROOT / "standalone").rglob("*.yaml"))
PAIR = [ROOT / "standalone" / "nginx-pair" / f"lb{n}.yaml" for n in (1, 2)]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
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


def test_the_nginx_pair_moves_its_vip(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", *map(str, PAIR)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_check_config_warns_about_a_weight_that_cannot_move_the_vip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seeds' mistake: weight -5 against a priority gap of 50."""
    files = []
    for path in PAIR:
        weak = tmp_path / path.name
        weak.write_text(path.read_text().replace("weight: -60", "weight: -5"))
        files.append(str(weak))
    assert main(["check-config", *files]) == 0
    err = capsys.readouterr().err
    assert "warning: instance web (VRID 51) on lb1" in err
    assert "only to 145, still above lb2's 100" in err


def test_check_config_refuses_a_script_outside_the_allowlist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    assert main(["check-config", "--script-dir", str(scripts), str(PAIR[0])]) == 2
    err = capsys.readouterr().err
    assert "instances[0].notify.any" in err and "vip-notify" in err
