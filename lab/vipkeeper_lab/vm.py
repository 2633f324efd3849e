"""Run a command inside a throwaway qemu VM that boots Debian's kernel: the "VM lane".

Some behaviour (IPVS above all) needs kernel features the machine running the tests may lack.
Debian's ``linux-image-amd64`` ships them as modules, so a VM booting that kernel has them, as
long as it also sees the matching ``/lib/modules``. Rather than building a disk image, the VM
sees the host's ``/`` read-only over virtio-9p, with a tmpfs overlay on top so that the command
can write anywhere: the repo, the venv and every tool are exactly the host's, at the same paths,
and nothing the VM does reaches the host except through the writable folders it is given.

Boot sequence:

1. qemu (TCG: ``/dev/kvm`` on the machines this was built on does not run stock kernels) boots
   ``/boot/vmlinuz-<ver>`` with a tiny initramfs: busybox-static plus the modules 9p and overlayfs
   need (``modprobe -S <ver> --show-depends`` gives them in load order).
2. The initramfs init (stage 1) insmods them, mounts the host root over 9p, puts the overlay on
   top, mounts the per-run control folder and ``switch_root``s into the result, running stage 2.
3. Stage 2, a shell script written per run into the control folder, mounts the pseudo-filesystems,
   brings up ``lo``, loads ``ip_vs``, runs the command with a clean environment, writes its output
   and exit status to the control folder and powers off.

The initramfs only depends on the kernel, busybox and stage 1, so it is built once and cached; a
run costs one boot (about 6 s) plus the command, which is 15-30x slower under TCG than natively.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
#: Where the per-run control folder is mounted inside the VM (created in the overlay).
CONTROL_MOUNT = "/vipkeeper-vm"
#: Set in the command's environment, so that tests can tell they run inside the VM.
IN_VM_ENV = "VIPKEEPER_IN_VM"
#: Modules stage 1 needs before it can reach the host root; their dependencies are added.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
#: Large 9p messages cut the number of round trips, each of which is slow under TCG.
MSIZE = 512 * 1024
KERNEL_APPEND = (
    # `panic=-1` + qemu's `-no-reboot`: if anything kills PID 1 the VM exits at once instead of
    # hanging until the timeout. `random.trust_cpu` seeds the CRNG from `-cpu max`'s RDRAND, so
    # nothing blocks on entropy; `mitigations=off` saves TCG cycles on a throwaway VM.
    "console=ttyS0 quiet panic=-1 random.trust_cpu=on mitigations=off"
)
STAGE1_TIMEOUT = 120.0
KILL_WAIT = 10.0
PRUNE_AFTER = 3600.0
CONSOLE_TAIL = 4000

_HELPER_TIMEOUT = 30.0
_PT_INTERP = 3

STAGE1 = r"""#!/bin/busybox sh
# vipkeeper VM stage 1: reach the host root, overlay it, hand over to the per-run stage 2.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
    echo "vipkeeper-vm: stage 1 failed: $*"
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 5
    exit 1
}
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do
    insmod "/modules/$m" || fail "insmod $m"
done
# cache=loose: the host root is read-only and does not change under a test run, and caching
# its metadata and pages is what makes Python start in seconds rather than minutes under TCG.
# The virtio devices are probed asynchronously after insmod: wait for the 9p channel.
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=@MSIZE@,cache=loose hostroot /lower
do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "mount host root over 9p (virtio devices: $(ls /sys/bus/virtio/devices))"
    sleep 0.1
done
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "mount overlay"
mkdir -p /newroot@CONTROL@
mount -t 9p -o trans=virtio,version=9p2000.L,msize=@MSIZE@ vkctl /newroot@CONTROL@ \
    || fail "mount control folder"
umount /proc /sys /dev
exec switch_root /newroot /bin/sh @CONTROL@/stage2.sh
"""


class VmError(RuntimeError):
    """The VM lane cannot be set up here (the message says why)."""


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.version


@dataclass(frozen=True)
class VmResult:
    """What a VM run produced.

    ``exit_code`` is None when the command never finished: timeout, crash, failed boot.
    ``boot_seconds`` (qemu start to the command's start) is None if the command never started.
    ``output`` is the serial console followed by the command's stdout+stderr, for diagnosis;
    both are also available on their own.
    """

    exit_code: int | None
    output: str
    boot_seconds: float | None
    duration: float
    console: str = ""
    command_output: str = ""
    timed_out: bool = False

    def console_tail(self, limit: int = CONSOLE_TAIL) -> str:
        return self.console[-limit:]


def _version_key(version: str) -> list[tuple[int, int | str]]:
    # Numeric runs compare as numbers: 6.1.0-10 is newer than 6.1.0-9.
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d]+", version)]


def _find_module(modules_dir: Path, rel: str) -> Path | None:
    for suffix in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
        candidate = modules_dir / (rel + suffix)
        if candidate.exists():
            return candidate
    return None


def find_kernel() -> Kernel | None:
    """The newest installed kernel whose modules include IPVS, or None."""
    found: list[Kernel] = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        kernel = Kernel(version, image)
        if _find_module(kernel.modules_dir, "kernel/net/netfilter/ipvs/ip_vs") is not None:
            found.append(kernel)
    if not found:
        return None
    return max(found, key=lambda k: _version_key(k.version))


def _is_static_elf(path: Path) -> bool:
    """True for an ELF64 little-endian executable without a program interpreter."""
    try:
        with path.open("rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            (phoff,) = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, i * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    return None


def vm_unavailable() -> str | None:
    """Why the VM lane cannot run on this machine, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "the VM lane needs Linux"
    if os.uname().machine != "x86_64":
        return f"the VM lane boots x86_64 kernels; this machine is {os.uname().machine}"
    if os.geteuid() != 0:
        # The VM reads the host root through qemu: as anyone else it could not read root-only
        # files the tests need (the kernel image in /boot is 0600 on Debian, for a start).
        return "the VM lane needs root"
    if shutil.which(QEMU) is None:
        return f"no {QEMU} (Debian package qemu-system-x86)"
    if shutil.which("modprobe") is None:
        return "no modprobe (Debian package kmod)"
    if _busybox() is None:
        return "no statically linked busybox (Debian package busybox-static)"
    kernel = find_kernel()
    if kernel is None:
        return (
            "no /boot/vmlinuz-<ver> with /lib/modules/<ver>/kernel/net/netfilter/ipvs/ip_vs.ko* "
            "(Debian package linux-image-amd64)"
        )
    if not os.access(kernel.image, os.R_OK):
        return f"cannot read {kernel.image}"
    return None


def default_cache_dir() -> Path:
    """Where the initramfs is cached: overridable, else in the venv (a fresh clone starts empty)."""
    override = os.environ.get("VIPKEEPER_VM_CACHE")
    if override:
        return Path(override)
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "vm"
    return Path("/var/cache/vipkeeper-vm")


def _module_paths(kernel: Kernel) -> list[Path]:
    try:
        done = subprocess.run(
            # Without -a, modprobe takes every name after the first as a module parameter.
            ["modprobe", "-a", "-S", kernel.version, "--show-depends", *INITRAMFS_MODULES],
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmError(f"modprobe --show-depends for {kernel.version}: {exc}") from exc
    if done.returncode != 0:
        raise VmError(f"modprobe --show-depends for {kernel.version}: {done.stderr.strip()}")
    paths: list[Path] = []
    provided: set[str] = set()
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        if words[0] == "builtin":
            provided.add(words[1].replace("-", "_"))
        elif words[0] == "insmod":
            provided.add(_module_name(Path(words[1])).removesuffix(".ko").replace("-", "_"))
            # A module shared by several of ours is listed once per dependent.
            if Path(words[1]) not in paths:
                paths.append(Path(words[1]))
    missing = [m for m in INITRAMFS_MODULES if m.replace("-", "_") not in provided]
    if missing:
        raise VmError(f"kernel {kernel.version} lacks modules {missing}: {done.stdout.strip()}")
    return paths


def _module_bytes(path: Path) -> bytes:
    # busybox's insmod may lack the decompressor the distribution picked: hand it plain ELF.
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise VmError(f"{path} is zstd-compressed and there is no zstd to unpack it")
        done = subprocess.run(
            ["zstd", "-dc", str(path)], capture_output=True, timeout=_HELPER_TIMEOUT, check=True
        )
        return done.stdout
    return path.read_bytes()


def _module_name(path: Path) -> str:
    return path.name.split(".ko")[0] + ".ko"


class _Cpio:
    """A minimal "newc" cpio writer: all the kernel's initramfs unpacker needs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields) + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _stage1(modules: Sequence[str]) -> str:
    return (
        STAGE1.replace("@MODULES@", " ".join(modules))
        .replace("@MSIZE@", str(MSIZE))
        .replace("@CONTROL@", CONTROL_MOUNT)
    )


def build_initramfs(kernel: Kernel, cache_dir: Path | None = None) -> Path:
    """The initramfs for ``kernel``, built unless already cached, as a gzip'd cpio archive."""
    busybox = _busybox()
    if busybox is None:
        raise VmError("no statically linked busybox (Debian package busybox-static)")
    modules = _module_paths(kernel)
    init = _stage1([_module_name(m) for m in modules])
    key = hashlib.sha256(init.encode())
    # Package upgrades can keep the kernel version but change the files behind it.
    for path in (busybox, kernel.image, *modules):
        st = path.stat()
        key.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    cache = cache_dir or default_cache_dir()
    target = cache / f"initramfs-{kernel.version}-{key.hexdigest()[:16]}.cpio.gz"
    if target.exists():
        # Fresh mtime = in use: keeps it safe from another checkout's pruning below.
        with contextlib.suppress(OSError):
            os.utime(target)
        return target
    archive = _Cpio()
    for d in ("bin", "dev", "modules", "proc", "sys"):
        archive.directory(d)
    # The kernel opens /dev/console for init before anything is mounted: without this node
    # stage 1 would run with no stdin/stdout and its messages would be lost.
    archive.chardev("dev/console", 5, 1)
    archive.chardev("dev/null", 1, 3, 0o666)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", init.encode(), 0o755)
    for m in modules:
        archive.file(f"modules/{_module_name(m)}", _module_bytes(m))
    cache.mkdir(parents=True, exist_ok=True)
    # Written aside then renamed: a concurrent or interrupted build never leaves a torn archive.
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".initramfs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(archive.finish(), compresslevel=1))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    # Archives of previous kernels or stage 1 versions are dead weight, unless another process
    # is about to boot one (it refreshed its mtime): only those unused for a while go.
    for old in cache.glob("initramfs-*.cpio.gz"):
        with contextlib.suppress(OSError):
            if old != target and time.time() - old.stat().st_mtime > PRUNE_AFTER:
                old.unlink()
    return target


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _command_env(env: Mapping[str, str] | None) -> dict[str, str]:
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if sys.prefix != sys.base_prefix:
        path = f"{Path(sys.prefix) / 'bin'}:{path}"
    result = {
        "PATH": path,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": "/tmp",
        IN_VM_ENV: "1",
    }
    result.update(env or {})
    for name in result:
        if not _ENV_NAME_RE.match(name):
            raise ValueError(f"invalid environment variable name: {name!r}")
    return result


def _stage2(
    argv: Sequence[str], workdir: Path, env: Mapping[str, str], shared_rw: Sequence[Path]
) -> str:
    q = shlex.quote
    ctl = CONTROL_MOUNT
    lines = [
        "#!/bin/sh",
        "# vipkeeper VM stage 2 (generated per run by vipkeeper_lab.vm).",
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        'log() { echo "vipkeeper-vm: $*" > /dev/console; }',
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        "mkdir -p /dev/pts /dev/shm",
        "mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts",
        "mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        "mount -t tmpfs -o mode=1777 tmpfs /tmp",
    ]
    for i, path in enumerate(shared_rw):
        # mkdir: the folder may live under /tmp or /run, which are fresh tmpfs in here.
        lines.append(
            f"mkdir -p {q(str(path))} && "
            f"mount -t 9p -o trans=virtio,version=9p2000.L,msize={MSIZE} vkrw{i} {q(str(path))}"
            f" || log {q(f'cannot mount {path}')}"
        )
    lines += [
        "echo vipkeeper-vm > /proc/sys/kernel/hostname",
        "ip link set lo up || log 'cannot set lo up'",
        # Loaded up front so that /proc/net/ip_vs exists; schedulers (ip_vs_rr, ...) are loaded
        # on demand by the kernel through modprobe, which sees the host's /lib/modules.
        "modprobe ip_vs || log 'modprobe ip_vs failed'",
        f": > {ctl}/started",
        "log started",
        f"if cd {q(str(workdir))}; then",
        f"    env -i {' '.join(q(f'{k}={v}') for k, v in env.items())} \\",
        f"        {' '.join(q(a) for a in argv)} > {ctl}/output 2>&1 < /dev/null",
        "    rc=$?",
        "else",
        "    rc=125",
        "fi",
        f"echo $rc > {ctl}/exit_code.tmp && mv {ctl}/exit_code.tmp {ctl}/exit_code",
        'log "exit $rc"',
        "sync",
        "/bin/busybox poweroff -f",
        "echo o > /proc/sysrq-trigger",
        "sleep 10",
    ]
    return "\n".join(lines) + "\n"


def _fsdev(tag: str, path: Path, *, readonly: bool) -> list[str]:
    # qemu's option syntax escapes commas by doubling them.
    opts = f"local,id={tag},path={str(path).replace(',', ',,')},security_model=none"
    opts += ",multidevs=remap"
    if readonly:
        opts += ",readonly=on"
    return ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]


def qemu_argv(
    kernel: Kernel,
    initramfs: Path,
    control: Path,
    console: Path,
    *,
    memory_mb: int,
    cpus: int,
    shared_rw: Sequence[Path] = (),
) -> list[str]:
    argv = [
        QEMU,
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        str(memory_mb),
        "-smp",
        str(cpus),
        # No default NIC, VGA, monitor...: nothing the tests did not ask for, and the console
        # goes to a file so a chatty guest can never block on a pipe nobody reads.
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        f"file:{console}",
        "-no-reboot",
        "-kernel",
        str(kernel.image),
        "-initrd",
        str(initramfs),
        "-append",
        KERNEL_APPEND,
    ]
    argv += _fsdev("hostroot", Path("/"), readonly=True)
    argv += _fsdev("vkctl", control, readonly=False)
    for i, path in enumerate(shared_rw):
        argv += _fsdev(f"vkrw{i}", path, readonly=False)
    return argv


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _qemu(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """qemu, started in its own session and always killed (by its PID) when the block exits."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_WAIT)


#: What the VM mounts afresh over the host's: a directory below them is not the host's in there.
VM_PRIVATE = (Path("/tmp"), Path("/run"))


def _vm_private(path: Path) -> bool:
    return any(path == p or p in path.parents for p in VM_PRIVATE)


def run_in_vm(
    argv: Sequence[str],
    *,
    timeout: float,
    memory_mb: int = 1024,
    cpus: int = 2,
    workdir: Path | None = None,
    env: Mapping[str, str] | None = None,
    shared_rw: Sequence[Path] = (),
    cache_dir: Path | None = None,
) -> VmResult:
    """Boot a VM, run ``argv`` in ``workdir`` (default: the current directory) as root, power off.

    The VM sees the host's ``/`` read-only with a throwaway writable layer on top, plus each
    directory of ``shared_rw`` writable at its own path (results the host should see go there).
    The command gets a clean environment: PATH (with this venv's bin first), HOME, LANG, TERM,
    TMPDIR, ``VIPKEEPER_IN_VM=1``, then ``env``. ``timeout`` bounds everything, boot included.
    ``/tmp``, ``/run``, ``/dev``, ``/proc`` and ``/sys`` are the VM's own, so anything the
    command reads must live elsewhere, except ``workdir``, which is shared (writable) when it
    lies under /tmp or /run, and ``shared_rw`` folders; exit code 125 means ``workdir`` does not
    exist in the VM.
    Raises :class:`VmError` if the VM cannot be set up; see :func:`vm_unavailable`.
    """
    if not argv:
        raise ValueError("empty argv")
    reason = vm_unavailable()
    if reason is not None:
        raise VmError(reason)
    kernel = find_kernel()
    assert kernel is not None  # vm_unavailable() checked
    workdir = (workdir or Path.cwd()).resolve()
    shared = [Path(p).resolve() for p in shared_rw]
    if _vm_private(workdir) and not any(s == workdir or s in workdir.parents for s in shared):
        # A checkout under /tmp (a CI clone, say) would be hidden by the VM's own /tmp: share it.
        shared.insert(0, workdir)
    for path in shared:
        if not path.is_dir():
            raise VmError(f"shared folder {path} is not a directory")
    command_env = _command_env(env)
    initramfs = build_initramfs(kernel, cache_dir)

    started = time.monotonic()
    boot_seconds: float | None = None
    timed_out = stalled = False
    with tempfile.TemporaryDirectory(prefix="vipkeeper-vm-") as tmp:
        scratch = Path(tmp)
        control = scratch / "control"
        control.mkdir()
        (control / "stage2.sh").write_text(_stage2(argv, workdir, command_env, shared))
        console = scratch / "console.log"
        qemu_log = scratch / "qemu.log"
        qemu = qemu_argv(
            kernel, initramfs, control, console, memory_mb=memory_mb, cpus=cpus, shared_rw=shared
        )
        with _qemu(qemu, qemu_log) as proc:
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if boot_seconds is None and (control / "started").exists():
                    boot_seconds = elapsed
                if elapsed >= timeout:
                    timed_out = True
                    break
                # A boot that never reaches stage 2 is stuck for good: give up early rather
                # than sit out the whole timeout.
                if boot_seconds is None and elapsed > STAGE1_TIMEOUT:
                    stalled = True
                    break
                time.sleep(0.1)
        duration = time.monotonic() - started
        if boot_seconds is None and (control / "started").exists():
            boot_seconds = duration
        exit_text = _read(control / "exit_code").strip()
        exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else None
        console_text = _read(console)
        qemu_text = _read(qemu_log)
        command_output = _read(control / "output")
    notes = []
    if qemu_text.strip():
        notes.append(f"--- qemu ---\n{qemu_text.rstrip()}")
    if timed_out:
        notes.append(f"--- vipkeeper-vm: timed out after {timeout:g} s, qemu killed ---")
    elif stalled:
        notes.append(f"--- vipkeeper-vm: no stage 2 after {STAGE1_TIMEOUT:g} s, qemu killed ---")
    elif exit_code is None:
        notes.append("--- vipkeeper-vm: the VM stopped before the command finished ---")
    output = "\n".join(
        [f"--- console ---\n{console_text.rstrip()}", *notes, "--- command ---", command_output]
    )
    return VmResult(
        exit_code=exit_code,
        output=output,
        boot_seconds=boot_seconds,
        duration=duration,
        console=console_text,
        command_output=command_output,
        timed_out=timed_out or stalled,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vipkeeper_lab.vm [--timeout S] -- CMD...``: run CMD in the VM, by hand."""
    parser = argparse.ArgumentParser(
        prog="python -m vipkeeper_lab.vm", description="Run a command in the VM lane's VM."
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds, boot included")
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("command", nargs="+", help="command and arguments (after --)")
    args = parser.parse_args(argv)
    try:
        result = run_in_vm(
            args.command, timeout=args.timeout, memory_mb=args.memory_mb, cpus=args.cpus
        )
    except VmError as exc:
        print(f"vipkeeper-vm: {exc}", file=sys.stderr)
        return 2
    print(result.output)
    boot = "-" if result.boot_seconds is None else f"{result.boot_seconds:.1f} s"
    print(
        f"vipkeeper-vm: exit {result.exit_code}, boot {boot}, total {result.duration:.1f} s",
        file=sys.stderr,
    )
    return 1 if result.exit_code is None else result.exit_code


if __name__ == "__main__":
    sys.exit(main())
