"""`kestrel-flight bundle`: what goes onto a single-board computer, and nothing else.

A bundle is one tarball for one target: the flight program's wheel, built
for that target from this checkout (the `flight` and `kestrel` packages
only; no bench or ground code), its dependencies' wheels for that target,
the default configuration, a systemd unit, an install script, and
SHA256SUMS, which the install script checks before it touches anything. It
installs offline.

Targets other than the machine's own are built inside an emulated Debian
bookworm root filesystem (qemu-user through binfmt_misc; made once with
mmdebstrap and cached as a tarball). On armhf, numpy and cryptography come
from Debian's packages (PyPI has no armv7 wheels of them): the install
makes a virtual environment that sees the system's packages. The kernels use
no numpy C API, so one wheel serves numpy 1.24 (bookworm) and 2.x alike.
armhf builds with NEON enabled (-mfpu=neon); the kernel agreement tests run
under emulation say whether results stayed the same.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from kestrel.config import render_defaults

from .config import FlightProgramConfig

BUNDLE_FORMAT = 1
# On armhf, numpy and cryptography come from the target's Debian packages: PyPI has no armv7 wheels of
# them, and building them under emulation takes hours. Elsewhere the bundle carries every wheel.
ARMHF_SYSTEM_PACKAGES = {"numpy": "python3-numpy", "cryptography": "python3-cryptography"}
ROOTFS_PACKAGES = ("python3", "python3-venv", "python3-dev", "python3-pip", "python3-numpy", "python3-cryptography",
                   "gcc", "g++", "libc6-dev", "ca-certificates")
SUITE = "bookworm"
SUITE_PYTHON = "3.11"     # bookworm's python3: the version a cross-compiled wheel is built for


class BundleError(Exception):
    """Why a bundle could not be made or installed, in one sentence."""


@dataclass(frozen=True)
class Target:
    name: str            # what --arch takes
    debian_arch: str     # what mmdebstrap and dpkg call it
    machine: str         # what `uname -m` says on it
    cflags: str          # added for the kernels
    qemu_cpu: str = ""   # the board's core, for qemu-user: nothing is built or run with what it lacks
    triplet: str = ""    # Debian's multiarch name: its cross compiler is `<triplet>-gcc`
    system_packages: tuple[str, ...] = ()    # dependencies taken from the target's Debian packages


TARGETS = {
    # Raspberry Pi 4 (Cortex-A72) and Pi 2 / Zero 2 class in 32-bit mode (Cortex-A7).
    "aarch64": Target("aarch64", "arm64", "aarch64", "", "cortex-a72", "aarch64-linux-gnu"),
    "armhf": Target("armhf", "armhf", "armv7l", "-mfpu=neon", "cortex-a7", "arm-linux-gnueabihf",
                    tuple(ARMHF_SYSTEM_PACKAGES)),
}


def _name(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()


def native_target() -> Target:
    machine = platform.machine()
    for target in TARGETS.values():
        if target.machine == machine or (target.name == "armhf" and machine.startswith("armv7")):
            return target
    return Target(machine, machine, machine, "")


def source_root() -> Path:
    """The checkout this program runs from: a bundle is built from source, not from an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "setup.py").is_file() or not (root / "ext").is_dir():
        raise BundleError(f"kestrel-flight bundle builds from a source checkout; {root} is not one "
                          "(install with `pip install -e .` from the checkout, or give --source DIR)")
    return root


def flight_pyproject(root: Path, target: Target) -> str:
    """The checkout's project, cut down to the flight program: its packages, its dependencies, its command."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    deps = []
    for requirement in project["dependencies"]:
        name = _name(requirement)
        if name in target.system_packages:
            deps.append(f"{name}>=1.24" if name == "numpy" else name)   # bookworm's numpy is 1.24
        else:
            deps.append(requirement)
    quoted = ", ".join(f'"{d}"' for d in deps)
    return f"""[build-system]
requires = ["setuptools>=64", "wheel", "Cython>=3", "numpy"]
build-backend = "setuptools.build_meta"

[project]
name = "kestrel-flight"
version = "{project['version']}"
description = "Kestrel onboard payload program (flight package only)"
requires-python = "{project['requires-python']}"
dependencies = [{quoted}]

[project.scripts]
kestrel-flight = "flight.cli:main"

[tool.setuptools.packages.find]
include = ["kestrel*", "flight*"]

[tool.setuptools.package-data]
"flight.data" = ["*.kclf"]
"""


def stage_source(root: Path, into: Path, target: Target) -> Path:
    """A copy of the flight program's source, with its own pyproject, ready to build a wheel from."""
    stage = into / "kestrel-flight-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.pyc", "build")
    for package in ("flight", "kestrel", "ext"):
        shutil.copytree(root / package, stage / package, ignore=ignore)
    shutil.copy2(root / "setup.py", stage / "setup.py")
    (stage / "pyproject.toml").write_text(flight_pyproject(root, target))
    (stage / "MANIFEST.in").write_text("recursive-include ext *.pyx *.pxi *.pxd\ninclude flight/data/*.kclf\n")
    return stage


def system_unit(user: str = "kestrel") -> str:
    return f"""[Unit]
Description=Kestrel payload flight program
After=local-fs.target
StartLimitIntervalSec=600
StartLimitBurst=20

[Service]
Type=notify
NotifyAccess=main
ExecStart=/opt/kestrel/venv/bin/kestrel-flight --config /etc/kestrel/flight.toml --store /var/lib/kestrel/store.sqlite
User={user}
Group={user}
SupplementaryGroups=dialout
WatchdogSec=10
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
StateDirectory=kestrel
LogsDirectory=kestrel
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
ReadWritePaths=/var/lib/kestrel

[Install]
WantedBy=multi-user.target
"""


INSTALL_SCRIPT = """#!/bin/sh
# Install this Kestrel flight bundle. Checks SHA256SUMS first; changes nothing if a file does not match.
#   sudo ./install.sh            install under /opt/kestrel, config in /etc/kestrel, the systemd unit
#   ./install.sh --prefix DIR    install the program only, into DIR (no root, no unit; for tests)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/kestrel
system=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; system=no; shift 2 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cd "$here"
if ! sha256sum --quiet --strict -c SHA256SUMS; then
    echo "install.sh: the bundle does not match its SHA256SUMS; nothing installed" >&2
    exit 1
fi
expected=$(cat ARCH)
machine=$(uname -m)
case "$expected:$machine" in
    aarch64:aarch64|armhf:armv7l|armhf:armv8l) ;;
    *) [ "$expected" = "$machine" ] || { echo "install.sh: a bundle for $expected, on $machine" >&2; exit 1; } ;;
esac
# Dependencies this target takes from its Debian packages (SYSTEM_PACKAGES: module, then package).
while read -r module package; do
    [ -n "$module" ] || continue
    python3 -c "import $module" 2>/dev/null || {
        echo "install.sh: needs $package (apt install $package python3-venv)" >&2; exit 1; }
done < SYSTEM_PACKAGES
python3 -m venv --system-site-packages "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --no-index --find-links wheels --quiet kestrel-flight
if [ "$system" = yes ]; then
    id kestrel >/dev/null 2>&1 || useradd --system --home-dir /var/lib/kestrel --shell /usr/sbin/nologin kestrel
    install -d -m 0755 /etc/kestrel
    [ -e /etc/kestrel/flight.toml ] || install -m 0644 flight.toml /etc/kestrel/flight.toml
    install -m 0644 kestrel-flight.service /etc/systemd/system/kestrel-flight.service
    systemctl daemon-reload
    echo "installed; edit /etc/kestrel/flight.toml (flight.port), then: systemctl enable --now kestrel-flight"
else
    echo "installed into $prefix"
fi
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BundleError(f"{what} failed (exit {result.returncode}):\n{tail}")


def cache_dir() -> Path:
    return Path(os.environ.get("KESTREL_CACHE", Path.home() / ".cache" / "kestrel"))


def rootfs_tarball(target: Target) -> Path:
    """The cached Debian root filesystem for `target`, made with mmdebstrap the first time (minutes)."""
    tarball = cache_dir() / f"rootfs-{SUITE}-{target.debian_arch}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise BundleError("building for another architecture needs mmdebstrap and qemu-user-static "
                          "(apt install mmdebstrap qemu-user-static binfmt-support)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    # --format=tar: mmdebstrap picks the format from the name's extension, and makes a directory of ".partial".
    _run(["mmdebstrap", f"--arch={target.debian_arch}", "--variant=apt", "--format=tar",
          f"--include={','.join(ROOTFS_PACKAGES)}", SUITE, str(partial)],
         f"mmdebstrap of a {target.debian_arch} root filesystem")
    partial.rename(tarball)
    return tarball


class EmulatedRoot:
    """A root filesystem of the target unpacked into a directory, with commands run in it by chroot.

    The host's binfmt_misc hands the target's binaries to qemu-user. Network and DNS come from the host."""

    def __init__(self, target: Target, directory: Path):
        self.target = target
        self.path = directory
        self._mounted: list[Path] = []

    def __enter__(self) -> "EmulatedRoot":
        if os.geteuid() != 0:
            raise BundleError("an emulated root filesystem needs root (chroot and mounts)")
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        name = "qemu-aarch64" if self.target.debian_arch == "arm64" else "qemu-arm"
        if not (binfmt / name).exists():
            raise BundleError(f"binfmt_misc has no {name} handler: apt install qemu-user-static binfmt-support, "
                              f"then mount -t binfmt_misc binfmt_misc {binfmt} && update-binfmts --enable {name}")
        self.path.mkdir(parents=True, exist_ok=True)
        with tarfile.open(rootfs_tarball(self.target)) as tar:
            tar.extractall(self.path, filter="fully_trusted")
        shutil.copy2("/etc/resolv.conf", self.path / "etc" / "resolv.conf")
        # The host's trusted certificates: pip inside reaches the index as the host does (through the
        # same TLS-inspecting proxy, where there is one).
        host_ca = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile
        if host_ca and Path(host_ca).is_file():
            shutil.copy2(host_ca, self.path / "etc" / "ssl" / "certs" / "ca-certificates.crt")
        # The host's /dev and /dev/pts themselves: a pty the bench makes outside is a port inside.
        for args, where in ((["-t", "proc", "proc"], "proc"), (["--bind", "/dev"], "dev"),
                            (["--bind", "/dev/pts"], "dev/pts")):
            mount = self.path / where
            mount.mkdir(parents=True, exist_ok=True)
            _run(["mount", *args, str(mount)], f"mount {where} in the emulated root")
            self._mounted.append(mount)
        return self

    def run(self, script: str, what: str, timeout: float = 3600, env: dict | None = None) -> str:
        # qemu-user reads QEMU_CPU from the environment of each program it starts, so it stays set inside.
        cpu = {"QEMU_CPU": self.target.qemu_cpu} if self.target.qemu_cpu else {}
        command = ["chroot", str(self.path), "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                   "HOME=/root", "LC_ALL=C.UTF-8", *(f"{k}={v}" for k, v in {**cpu, **(env or {})}.items()),
                   "/bin/sh", "-ec", script]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise BundleError(f"{what} in the emulated {self.target.name} root failed (exit {result.returncode}):\n"
                              f"{tail}")
        return result.stdout

    def __exit__(self, *exc) -> None:
        for mount in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        self._mounted.clear()


def _dependency_requirements(stage: Path, target: Target) -> list[str]:
    deps = tomllib.loads((stage / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if _name(d) not in target.system_packages]


def build_wheels_native(stage: Path, wheels: Path, target: Target) -> None:
    python = sys.executable
    _run([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(stage)],
         "building the flight wheel")
    _run([python, "-m", "pip", "wheel", "--quiet", "-w", str(wheels), *_dependency_requirements(stage, target)],
         "building the dependencies' wheels")


def can_cross_compile(target: Target) -> bool:
    """Debian's cross compiler for the target is here, and this Python is the target's version."""
    return (bool(target.triplet) and shutil.which(f"{target.triplet}-gcc") is not None
            and f"{sys.version_info[0]}.{sys.version_info[1]}" == SUITE_PYTHON)


def build_flight_wheel_cross(target: Target, stage: Path, wheels: Path, work: Path) -> None:
    """The flight wheel, its kernels compiled here by `<triplet>-gcc` (Debian's gcc-<triplet> package).

    Cython runs natively; the compiler is the one the target's Debian would use (same gcc release), fed the
    target's own Python headers and build configuration (its _sysconfigdata: compiler, flags, extension
    suffix), taken from the root filesystem. gcc under qemu takes tens of minutes for these kernels on a
    busy machine; this takes one or two. The kernels' results on the target are then checked by the
    agreement tests under emulation, as if they had been built there."""
    python_dir = f"python{SUITE_PYTHON}"
    sysconfig_module = f"_sysconfigdata__{target.triplet}"
    wanted = (f"usr/include/{python_dir}/", f"usr/include/{target.triplet}/{python_dir}/",
              f"usr/lib/{python_dir}/{sysconfig_module}.py")
    cross = work / "cross"
    with tarfile.open(rootfs_tarball(target)) as tar:
        members = [m for m in tar if m.isfile() and m.name.removeprefix("./").startswith(wanted)]
        tar.extractall(cross, members=members, filter="data")
    if not (cross / "usr" / "lib" / python_dir / f"{sysconfig_module}.py").is_file():
        raise BundleError(f"the {target.debian_arch} root filesystem has no {sysconfig_module}.py (python3-dev)")
    # A build environment of this machine's own (Cython, setuptools), then the build hook run with the
    # target's configuration: no pip in that step, since pip would pick wheels for the target's platform.
    tools = work / "build-tools"
    _run([sys.executable, "-m", "venv", str(tools)], "making the build environment")
    _run([str(tools / "bin" / "pip"), "install", "--quiet", "setuptools>=64", "wheel", "Cython>=3", "numpy"],
         "installing the build tools")
    include = cross / "usr" / "include"
    env = {**os.environ,
           "_PYTHON_HOST_PLATFORM": f"linux-{target.machine}",          # the wheel's platform tag
           "_PYTHON_SYSCONFIGDATA_NAME": sysconfig_module,
           "PYTHONPATH": str(cross / "usr" / "lib" / python_dir),
           # The target's Python.h first; its pyconfig.h includes <triplet/pythonX.Y/pyconfig.h>.
           "CFLAGS": f"-I{include / python_dir} -I{include} {target.cflags}".strip()}
    _run([str(tools / "bin" / "python"), "-c",
          "import sys, setuptools.build_meta as hook; print(hook.build_wheel(sys.argv[1]))", str(wheels)],
         f"cross-compiling the flight wheel with {target.triplet}-gcc", cwd=stage, env=env)


def build_wheels_emulated(target: Target, stage: Path, wheels: Path, work: Path, flight: bool = True) -> None:
    """The dependencies' wheels (PyPI's for the target, or built from source there), and unless it was
    cross-compiled, the flight wheel, all built inside an emulated root of the target."""
    with EmulatedRoot(target, work / "root") as root:
        shutil.copytree(stage, root.path / "build" / "src")
        requirements = " ".join(f"'{r}'" for r in _dependency_requirements(stage, target))
        flight_wheel = """/build/venv/bin/pip install --quiet 'cython>=3' 'setuptools>=64' wheel
cd /build/src
/build/venv/bin/pip wheel --quiet --no-deps --no-build-isolation -w /build/wheels .
""" if flight else ""
        root.run(f"""
python3 -m venv --system-site-packages /build/venv
{flight_wheel}/build/venv/bin/pip wheel --quiet -w /build/wheels {requirements}
""", "building the wheels", env={"CFLAGS": target.cflags} if target.cflags else None)
        for wheel in (root.path / "build" / "wheels").glob("*.whl"):
            shutil.copy2(wheel, wheels / wheel.name)


def make_bundle(arch: str, out: Path, root: Path | None = None) -> Path:
    """Build the bundle for `arch` ('native' for this machine) into `out`; the tarball's path."""
    root = root or source_root()
    target = native_target() if arch == "native" else TARGETS.get(arch)
    if target is None:
        raise BundleError(f"unknown --arch {arch!r}: one of {', '.join([*TARGETS, 'native'])}")
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    name = f"kestrel-flight-{version}-{target.name}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kestrel-bundle-") as tmp:
        work = Path(tmp)
        stage = stage_source(root, work, target)
        bundle = work / name
        wheels = bundle / "wheels"
        wheels.mkdir(parents=True)
        if target == native_target():
            build_wheels_native(stage, wheels, target)
        else:
            cross = can_cross_compile(target)
            if cross:
                build_flight_wheel_cross(target, stage, wheels, work)
            build_wheels_emulated(target, stage, wheels, work, flight=not cross)
        (bundle / "flight.toml").write_text(render_defaults(FlightProgramConfig))
        (bundle / "kestrel-flight.service").write_text(system_unit())
        (bundle / "install.sh").write_text(INSTALL_SCRIPT)
        (bundle / "install.sh").chmod(0o755)
        (bundle / "ARCH").write_text(target.name + "\n")
        wanted = {_name(d) for d in tomllib.loads((stage / "pyproject.toml").read_text())["project"]["dependencies"]}
        (bundle / "SYSTEM_PACKAGES").write_text("".join(
            f"{module} {ARMHF_SYSTEM_PACKAGES[module]}\n" for module in target.system_packages if module in wanted))
        (bundle / "FORMAT").write_text(f"{BUNDLE_FORMAT}\n")
        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        sums = "".join(f"{sha256(p)}  {p.relative_to(bundle)}\n" for p in files)
        (bundle / "SHA256SUMS").write_text(sums)
        tarball = out / f"{name}.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(bundle, arcname=name)
    return tarball
