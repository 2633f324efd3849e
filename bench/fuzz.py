#!/usr/bin/env python3
"""Coverage-guided fuzzing of the parsing surfaces with atheris (libFuzzer).

    .venv/bin/python bench/fuzz.py                       # 1e6 inputs per target
    .venv/bin/python bench/fuzz.py --quick               # 20,000 inputs per target, ~1 minute
    .venv/bin/python bench/fuzz.py --target decoder --inputs 100000

Targets, each in its own process (``--worker``), seeded with valid inputs:

* ``decoder``: ``vrrp.packet.decode``; input = 1 byte (family, mismatched destination) +
  source + destination + the VRRP message; seeds: encoded adverts. Rejection: DecodeError.
* ``loader``: ``load_spec`` on the raw bytes (the standalone YAML); seeds: examples/standalone.
  Rejection: ConfigError.
* ``resources``: the operator's ``parse.virtual_ip`` / ``virtual_server`` /
  ``assignment_status`` on a JSON object (what the API hands over), dispatched by ``kind``;
  seeds: the VirtualIPs and VirtualServers of examples/kubernetes. Rejection: ``parse.Rejected``.
* ``assignment``: the agent's ``kube.assignment.evaluate`` / ``owners`` on a JSON
  NodeAssignment, ``cached_generation`` on the raw bytes; seeds: the standalone examples as
  NodeAssignments. Rejection: ``assignment.Rejected``. An accepted spec must come back equal
  from its cache file (``render`` then ``load_spec``).

A crash is any other exception, a rejection without a reason (no DropReason, a problem without a
message, a message naming no ``spec`` path), a broken invariant of an accepted input, or a
libFuzzer timeout (hang, ``-timeout``) or out-of-memory. Crashing inputs are saved under
``bench/results/fuzz-crashes/`` (a few per distinct crash, with the traceback beside them); the
exit status is non-zero if there is any. Inputs that are not JSON at all (resources, assignment)
are counted as rejections of the harness ("input: not a JSON object"), not of the target.
"""

from __future__ import annotations

import argparse
import collections
import copy
import enum
import hashlib
import importlib
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = ("decoder", "loader", "resources", "assignment")
MAX_LEN = {"decoder": 1 + 32 + 8 + 255 * 16, "loader": 8192, "resources": 8192, "assignment": 8192}
NOT_JSON = "input: not a JSON object"
KEEP_PER_CRASH = 3


class MishandledError(Exception):
    """An input the target handled wrongly without raising: a rejection without a reason, or a
    broken invariant of what it accepted."""


# --- the targets: bytes -> the rejection's reason ("accepted" when it parsed) ------------------
# The project's modules are imported in functions: atheris instruments only what is imported
# inside its instrument_imports() block, in the worker.


def _reason_key(message: str) -> str:
    """A rejection message without the user's values, so that rejections group by reason."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\(got .*|\d+(\.\d+)?", "_", message)
    return text.strip()[:60]


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def make_decoder() -> Callable[[bytes], str]:
    from vipkeeper_agent.vrrp.packet import DecodeError, DropReason, IPAddress, decode, encode  # noqa: PLC0415

    def target(data: bytes) -> str:
        flags, rest = (data[0], data[1:]) if data else (0, b"")
        width = 16 if flags & 1 else 4
        family = ipaddress.IPv6Address if width == 16 else ipaddress.IPv4Address
        source: IPAddress = family(int.from_bytes(rest[:width].ljust(width, b"\0")))
        packed = int.from_bytes(rest[width : 2 * width].ljust(width, b"\0"))
        destination: IPAddress = family(packed)
        if flags & 2:  # a destination of the other family
            other = ipaddress.IPv4Address(packed % 2**32) if width == 16 else None
            destination = ipaddress.IPv6Address(packed) if other is None else other
        message = rest[2 * width :]
        try:
            adv = decode(message, source, destination)
        except DecodeError as error:
            if not isinstance(error.reason, DropReason) or not error.detail:
                raise MishandledError(f"DecodeError without a reason: {error!r}") from None
            return f"{error.reason}"
        if len(adv.addresses) != message[3] or any(
            a.version != source.version for a in adv.addresses
        ):
            raise MishandledError(f"accepted with the wrong addresses: {adv}")
        try:
            again = encode(adv, source, destination)
        except ValueError:
            return "accepted (not re-encodable)"  # e.g. v2 auth type 2: the receive checks drop it
        if decode(again, source, destination) != adv:
            raise MishandledError(f"{adv} does not survive encode/decode")
        return "accepted"

    return target


def _problems_are_reasons(error: Any) -> None:
    if not error.problems:
        raise MishandledError("ConfigError without problems")
    for problem in error.problems:
        if not isinstance(problem.path, str) or not problem.message:
            raise MishandledError(f"problem without a path or a message: {problem!r}")


def make_loader() -> Callable[[bytes], str]:
    from vipkeeper_api.loader import ConfigError, load_spec  # noqa: PLC0415

    def target(data: bytes) -> str:
        try:
            load_spec(data, "fuzz.yaml")
        except ConfigError as error:
            _problems_are_reasons(error)
            str(error)  # the message the user reads must render, whatever the values
            return _reason_key(error.problems[0].message)
        return "accepted"

    return target


_PROBLEM_LINE = re.compile(r"^  - spec\b", re.M)


def make_resources() -> Callable[[bytes], str]:
    from vipkeeper_operator import parse  # noqa: PLC0415

    def target(data: bytes) -> str:
        obj = _json_object(data)
        if obj is None:
            return NOT_JSON
        kind = obj.get("kind")
        if kind == "NodeAssignment":
            status = parse.assignment_status(obj)
            return "status: unreadable" if status is None else "accepted"
        result = (parse.virtual_server if kind == "VirtualServer" else parse.virtual_ip)(obj)
        if isinstance(result, parse.Rejected):
            if not _PROBLEM_LINE.search(result.message):
                raise MishandledError(f"rejected without a spec path: {result.message!r}")
            line = result.message.split("\n  - ", 1)[1].split("\n", 1)[0]
            return _reason_key(line.split(": ", 1)[-1])
        return "accepted"

    return target


def make_assignment() -> Callable[[bytes], str]:
    from vipkeeper_agent.kube import assignment  # noqa: PLC0415
    from vipkeeper_api import load_spec  # noqa: PLC0415

    def target(data: bytes) -> str:
        assignment.cached_generation(data)
        obj = _json_object(data)
        if obj is None:
            return NOT_JSON
        if not isinstance(assignment.owners(obj), dict):
            raise MishandledError("owners() is not a dict")
        result = assignment.evaluate(obj, "node-1")
        if isinstance(result, assignment.Rejected):
            if "rejected" not in result.problem or ": " not in result.problem:
                raise MishandledError(f"rejected without a reason: {result.problem!r}")
            first = result.problem.split("last good spec: ", 1)[-1].split("; ", 1)[0]
            return _reason_key(first.split(": ", 1)[-1])
        cache = assignment.render(result.spec, "node-1", result.generation)
        if load_spec(cache) != result.spec:
            raise MishandledError("the accepted spec does not come back equal from its cache file")
        return "accepted"

    return target


MAKERS: dict[str, Callable[[], Callable[[bytes], str]]] = {
    "decoder": make_decoder,
    "loader": make_loader,
    "resources": make_resources,
    "assignment": make_assignment,
}
#: What each target's code is: instrumented for coverage (yaml too: the loader's first parser).
INSTRUMENT = {
    "decoder": ["vipkeeper_agent.vrrp.packet"],
    "loader": ["vipkeeper_api"],
    "resources": ["vipkeeper_api", "vipkeeper_operator"],
    "assignment": ["vipkeeper_api", "vipkeeper_agent.kube.assignment"],
}


# --- seeds and dictionaries ------------------------------------------------------------------


def _yaml_documents(folder: str) -> Iterator[tuple[Path, Any]]:
    for path in sorted((ROOT / "examples" / folder).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def seeds(target: str) -> list[bytes]:
    if target == "decoder":
        from vipkeeper_agent.vrrp.packet import Advertisement, IPAddress, encode  # noqa: PLC0415

        v4 = [ipaddress.IPv4Address(f"192.0.2.{n}") for n in range(1, 6)]
        v6 = [ipaddress.IPv6Address(f"2001:db8::{n}") for n in range(1, 6)]
        group4, group6 = ipaddress.IPv4Address("224.0.0.18"), ipaddress.IPv6Address("ff02::12")
        cases: list[tuple[Advertisement, IPAddress, IPAddress, int]] = [
            (Advertisement(3, 51, 100, 100, (v4[1],)), v4[0], group4, 0),
            (Advertisement(3, 7, 255, 10, tuple(v4[1:])), v4[0], group4, 0),
            (Advertisement(3, 51, 150, 4095, tuple(v6[1:3])), v6[0], group6, 1),
            (Advertisement(2, 51, 100, 100, (v4[1],)), v4[0], group4, 0),
            (Advertisement(2, 9, 0, 300, tuple(v4[1:4]), 1, b"secret"), v4[0], group4, 0),
        ]
        return [
            bytes([flag]) + source.packed + destination.packed + encode(adv, source, destination)
            for adv, source, destination, flag in cases
        ]
    if target == "loader":
        return [p.read_bytes() for p in sorted((ROOT / "examples/standalone").glob("*.yaml"))]
    if target == "resources":
        out = []
        for n, (_path, doc) in enumerate(_yaml_documents("kubernetes")):
            if doc.get("kind") in ("VirtualIP", "VirtualServer"):
                meta = {**doc.get("metadata", {}), "uid": f"u{n}", "generation": n + 1}
                out.append(json.dumps({**doc, "metadata": meta}, default=str).encode())
        status = {"instances": [{"name": "web", "state": "MASTER", "priority": 150}]}
        out.append(json.dumps({"kind": "NodeAssignment", "status": status}).encode())
        return out
    out = []
    for n, (path, doc) in enumerate(_yaml_documents("standalone")):
        owners = {"web": {"namespace": "default", "name": path.stem, "uid": "u1"}}
        meta = {
            "name": "node-1",
            "generation": n + 1,
            "annotations": {"vipkeeper.io/instance-owners": json.dumps(owners)},
        }
        obj = {"apiVersion": "vipkeeper.io/v1alpha1", "kind": "NodeAssignment", "metadata": meta}
        out.append(json.dumps({**obj, "spec": doc}, default=str).encode())
    return out


def _vocabulary(model: Any, seen: set[Any]) -> Iterator[str]:
    """Every key and every literal/enum value the models know: libFuzzer's dictionary."""
    if model in seen:
        return
    seen.add(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, field in model.model_fields.items():
            yield field.alias or name
            yield from _vocabulary(field.annotation, seen)
    elif isinstance(model, type) and issubclass(model, enum.Enum):
        yield from (str(member.value) for member in model)
    for arg in typing.get_args(model):
        if isinstance(arg, str | int) and not isinstance(arg, bool):
            yield str(arg)
        else:
            yield from _vocabulary(arg, seen)


def dictionary(target: str) -> list[str]:
    if target == "decoder":
        return []
    from vipkeeper_api import NodeAssignmentSpec  # noqa: PLC0415
    from vipkeeper_api.resources import NodeAssignmentStatus, VirtualIPSpec, VirtualServerSpec  # noqa: PLC0415

    models = [NodeAssignmentSpec]
    if target == "resources":
        models = [VirtualIPSpec, VirtualServerSpec, NodeAssignmentStatus]  # type: ignore[list-item]
    words: set[str] = set()
    for model in models:
        words.update(w for w in _vocabulary(model, set()) if w)
    values = ["192.0.2.10", "192.0.2.10/24", "2001:db8::10/64", "ff02::12", "224.0.0.18"]
    if target == "loader":
        tokens = [f"{w}: " for w in sorted(words)] + ["- ", "&a ", "*a", "{", "["] + values
        tokens += ["!!float ", "!!int ", "!!timestamp ", "!!binary ", "!!set ", "2001-02-30", "0x"]
    else:
        tokens = [json.dumps(w) for w in sorted(words)] + ["null", "true", "1e999", "-1"]
        tokens += [json.dumps(v) for v in values] + ['"kind"', '"VirtualServer"', '"metadata"']
    escaped = (t.replace("\\", "\\\\").replace('"', '\\"') for t in tokens)
    return [f'"{t}"' for t in escaped]


# --- structure-aware mutation: most byte flips of a JSON or YAML document are syntax errors ------

LEAVES: tuple[object, ...] = (None, True, False, 0, -1, 1, 255, 256, 65536, 2**64, 1e308, -0.5)
LEAVES += (0.01, "", "x" * 300, "192.0.2.300", "::", "eth0", "tcp", [], {})


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(container, key) of every value below ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        out.append((node, key))
        if isinstance(value, dict | list):
            _slots(value, out)
    return out


def mutate_tree(doc: dict[str, Any], rng: random.Random, words: list[str]) -> dict[str, Any]:
    for _ in range(rng.randint(1, 3)):
        slots = _slots(doc, [])
        if not slots:
            doc[rng.choice(words)] = rng.choice(LEAVES)
            continue
        parent, key = rng.choice(slots)
        value, op = parent[key], rng.randrange(7)
        if op == 0:
            parent[key] = copy.deepcopy(rng.choice(LEAVES))
        elif op == 1:
            del parent[key]
        elif op == 2 and isinstance(value, dict):
            value[rng.choice(words)] = copy.deepcopy(rng.choice(LEAVES + tuple(words)))
        elif op == 3:
            other, other_key = rng.choice(slots)
            parent[key] = copy.deepcopy(other[other_key])
        elif op == 4:
            parent[key] = [value] if rng.random() < 0.5 else {rng.choice(words): value}
        elif op == 5 and isinstance(value, list) and value:
            value.append(copy.deepcopy(rng.choice(value)))
        elif isinstance(value, str):
            raw = _atheris().Mutate(value.encode(), max(8, 2 * len(value)))
            parent[key] = raw.decode(errors="replace")
        else:
            parent[key] = rng.choice(words)
    return doc


def make_mutator(target: str) -> Callable[[bytes, int, int], bytes] | None:
    if target == "decoder":
        return None
    words = [w.strip('"').rstrip(": ") for w in dictionary(target)]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    def structural(data: bytes, rng: random.Random) -> bytes | None:
        doc = yaml.load(data, Loader=loader) if target == "loader" else json.loads(data)
        if not isinstance(doc, dict):
            return None
        doc = mutate_tree(doc, rng, words)
        if target == "loader":
            return yaml.dump(doc, Dumper=dumper).encode()
        return json.dumps(doc).encode()

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.9:
            try:
                out = structural(data, rng)
            except Exception:  # not a document (PyYAML raises more than YAMLError)
                out = None
            if out is not None and len(out) <= max_size:
                return out
        mutated: bytes = _atheris().Mutate(data, max_size)
        return mutated

    return mutator


# --- the worker: one target under libFuzzer -------------------------------------------------


def _atheris() -> Any:
    # atheris ships no type information: this shim is its only use, typed at the call sites.
    return importlib.import_module("atheris")


def worker(args: argparse.Namespace) -> int:
    atheris = _atheris()
    target_name: str = args.worker
    with atheris.instrument_imports(include=INSTRUMENT[target_name]):
        target = MAKERS[target_name]()
    crashes_dir = Path(args.crashes)
    stats_path = Path(args.stats)
    reasons: collections.Counter[str] = collections.Counter()
    crashes: collections.Counter[str] = collections.Counter()
    state = {"count": 0, "first": 0.0, "flushed": 0.0}

    def flush(now: float) -> None:
        stats = {
            "target": target_name,
            "count": state["count"],
            "seconds": now - state["first"],
            "reasons": dict(reasons),
            "crashes": dict(crashes),
        }
        stats_path.write_text(json.dumps(stats))
        state["flushed"] = now

    def test_one_input(data: bytes) -> None:
        now = time.monotonic()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        try:
            reasons[target(data)] += 1
        except Exception as error:  # any exception here is the finding
            frame = traceback.extract_tb(error.__traceback__)[-1]
            signature = f"{type(error).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            crashes[signature] += 1
            if crashes[signature] <= KEEP_PER_CRASH:
                name = f"{target_name}-{hashlib.sha1(data).hexdigest()[:12]}"
                (crashes_dir / f"{name}.bin").write_bytes(data)
                (crashes_dir / f"{name}.txt").write_text(traceback.format_exc())
        if state["count"] == args.runs or now - state["flushed"] > 1.0:
            flush(now)

    mutator = make_mutator(target_name)
    extra = {} if mutator is None else {"custom_mutator": mutator}
    atheris.Setup([sys.argv[0], *args.libfuzzer], test_one_input, **extra)
    atheris.Fuzz()
    return 0


# --- the driver ---------------------------------------------------------------------------


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    corpus = RESULTS / "fuzz-corpus" / target
    if args.fresh:
        shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()[:12]}").write_bytes(seed)
    crashes_dir = RESULTS / "fuzz-crashes"
    crashes_dir.mkdir(parents=True, exist_ok=True)
    dict_path = RESULTS / f"fuzz-{target}.dict"
    dict_path.write_text("\n".join(dictionary(target)) + "\n")
    stats_path = RESULTS / f"fuzz-{target}.stats.json"
    stats_path.unlink(missing_ok=True)
    libfuzzer = [
        f"-runs={args.inputs}",
        f"-max_total_time={args.max_time}",
        f"-max_len={MAX_LEN[target]}",
        f"-timeout={args.timeout}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes_dir}/{target}-",
        f"-seed={args.seed}",
        "-print_final_stats=1",
        str(corpus),
    ]
    if dictionary(target):
        libfuzzer.insert(0, f"-dict={dict_path}")
    command = [sys.executable, __file__, "--worker", target, "--runs", str(args.inputs)]
    command += ["--stats", str(stats_path), "--crashes", str(crashes_dir), "--", *libfuzzer]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    log = proc.stderr
    (RESULTS / f"fuzz-{target}.log").write_text(log)
    stats: dict[str, Any] = {"count": 0, "seconds": 0.0, "reasons": {}, "crashes": {}}
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    crashes = dict(stats["crashes"])
    if proc.returncode != 0:
        kind = re.search(r"ERROR: libFuzzer: ([\w-]+)", log)
        crashes[f"libFuzzer {kind.group(1) if kind else f'exit {proc.returncode}'}"] = 1
    coverage = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    return {
        "target": target,
        "inputs": int(done.group(1)) if done else stats["count"],
        "rate": stats["count"] / stats["seconds"] if stats["seconds"] else 0.0,
        "wall_seconds": round(wall, 1),
        "reasons": stats["reasons"],
        "crashes": crashes,
        "coverage": dict(zip(("edges", "features", "corpus"), map(int, coverage[-1]), strict=True))
        if coverage
        else {},
    }


def render(rows: list[dict[str, Any]], top: int) -> str:
    lines = [
        f"{'target':<11} {'inputs':>9} {'inputs/s':>9} {'wall s':>7} {'cov':>5} {'crashes':>7}"
    ]
    for row in rows:
        cov = row["coverage"].get("edges", "-")
        crashes = sum(row["crashes"].values())
        lines.append(
            f"{row['target']:<11} {row['inputs']:>9} {row['rate']:>9.0f} "
            f"{row['wall_seconds']:>7} {cov:>5} {crashes:>7}"
        )
        total = sum(row["reasons"].values()) or 1
        ranked = sorted(row["reasons"].items(), key=lambda kv: -kv[1])
        for reason, n in ranked[:top]:
            lines.append(f"{'':<13}{100 * n / total:5.1f}%  {reason}")
        if len(ranked) > top:
            lines.append(f"{'':<13}       ({len(ranked) - top} more reasons)")
        for signature, n in row["crashes"].items():
            lines.append(f"{'':<13}CRASH x{n}: {signature}")
    return "\n".join(lines)


#: The issue's target: a million inputs per surface, no crash.
TARGET_INPUTS = 1_000_000


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets in the shape every benchmark reports them (bench/report.py gathers them)."""
    found = []
    for row in rows:
        crashes = sum(row["crashes"].values())
        found.append(
            {
                "target": f"{row['target']}: inputs tried",
                "value": row["inputs"],
                "limit": f">= {TARGET_INPUTS}",
                "status": "MET" if row["inputs"] >= TARGET_INPUTS else "MISSED",
            }
        )
        found.append(
            {
                "target": f"{row['target']}: crashes",
                "value": crashes,
                "limit": 0,
                "status": "MET" if crashes == 0 else "MISSED",
            }
        )
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable")
    parser.add_argument("--max-time", type=int, default=900, help="seconds per target at most")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input: a hang")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's seed")
    parser.add_argument("--fresh", action="store_true", help="start from the seeds only")
    parser.add_argument("--quick", action="store_true", help="20,000 inputs per target")
    parser.add_argument("--top", type=int, default=4, help="rejection reasons shown per target")
    parser.add_argument("--json", default=str(RESULTS / "fuzz.json"))
    parser.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--crashes", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.inputs = min(args.inputs, 20_000)
    targets = args.target or list(TARGETS)
    print(f"fuzzing {', '.join(targets)}: {args.inputs} inputs each (at most {args.max_time} s)")
    rows = []
    for target in targets:
        rows.append(run_target(target, args))
        print(
            f"  {target}: {rows[-1]['inputs']} inputs in {rows[-1]['wall_seconds']} s", flush=True
        )
    text = render(rows, args.top)
    print(text)
    load = os.getloadavg()
    report = {
        "inputs_per_target": args.inputs,
        "load_average": load,
        "runs": rows,
        "targets": goals(rows),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    # The table as printed, for bench/report.py.
    Path(args.json).with_suffix(".txt").write_text(text + "\n")
    crashed = sum(sum(row["crashes"].values()) for row in rows)
    print(f"{crashed} crashes; load average {load[0]:.2f}; results in {args.json}")
    if crashed:
        print(f"crashing inputs (and tracebacks): {RESULTS / 'fuzz-crashes'}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
