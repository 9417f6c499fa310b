"""Booted Debian machines for the appliance tests: systemd-nspawn containers on a bridge.

Each machine is the cached root filesystem (``rootfs.py``) under a private overlay (so the
three machines share one debootstrap and cost no copy), booted with
``systemd-nspawn -b --register=no --keep-unit`` in a cgroup of its own (the host's PID 1 is
not systemd), attached to a bridge this module creates, and reached over ssh with a key
made for the test session. :class:`Garage` owns everything it creates and removes it all in
:meth:`Garage.destroy`, also after a failure half-way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from casatwin.waiting import wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Everything a run creates on the host is named after its pid, so that what a killed run
# left behind can be told from a live run's and swept (see sweep_abandoned_garages).
WORKDIR_PREFIX = "casatwin-garage-"
CGROUP_PREFIX = "casatwin-appliance-"
BRIDGE_PREFIX = "ctw"
# Candidate subnets for the bridge; the first that no host route overlaps is used.
SUBNETS = ("10.213.8.0/24", "10.214.8.0/24", "172.30.213.0/24", "192.168.213.0/24")


def run(cmd: list[str], timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result


def _host_networks() -> list[ipaddress.IPv4Network]:
    out = run(["ip", "-4", "route", "show"]).stdout
    nets = []
    for line in out.splitlines():
        first = line.split()[0]
        if first != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(first, strict=False))
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    taken = _host_networks()
    for candidate in map(ipaddress.ip_network, SUBNETS):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError(f"every candidate subnet overlaps a host route: {SUBNETS}")


@dataclass
class Machine:
    """One booted container."""

    name: str
    address: str
    workdir: Path
    process: subprocess.Popen | None = None
    leader: int = 0
    mounted: bool = False
    cgroups: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    def sh(self, script: str, timeout_s: float = 120, check: bool = True) -> str:
        """Run a shell script inside the machine (all namespaces), return its stdout."""
        result = run(
            ["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script],
            timeout_s=timeout_s, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name}: `{script}` failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result.stdout

    def journal(self, unit: str, lines: int = 40) -> str:
        return self.sh(f"journalctl -u {unit} -n {lines} --no-pager", check=False)


@dataclass
class Garage:
    """Machines on a private bridge, with an ssh key and an inventory to reach them."""

    base: Path
    workdir: Path
    names: tuple[str, ...]
    wheelhouse: Path | None = None
    bridge: str = field(default_factory=lambda: f"{BRIDGE_PREFIX}{os.getpid()}")
    machines: dict[str, Machine] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None
    bridge_created: bool = False

    @property
    def ssh_key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    # -- creation -------------------------------------------------------------------------

    def create(self, boot_timeout_s: float = 180) -> None:
        for leftover in sweep_abandoned_garages(self.workdir.parent):
            print(f"removed what a killed appliance run left: {leftover}", file=sys.stderr)
        self.workdir.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)])
        self._create_bridge()
        for index, name in enumerate(self.names):
            address = str(self.subnet.network_address + 10 + index)
            self.machines[name] = Machine(name, address, self.workdir / name)
        for machine in self.machines.values():
            self._prepare_root(machine)
            self._boot(machine)
        for machine in self.machines.values():
            self._wait_booted(machine, boot_timeout_s)
            self._configure_network(machine)
        for machine in self.machines.values():
            self._wait_ssh(machine, boot_timeout_s)

    def _create_bridge(self) -> None:
        self.subnet = free_subnet()
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.bridge_created = True
        run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    def _prepare_root(self, machine: Machine) -> None:
        upper, work = machine.workdir / "upper", machine.workdir / "work"
        for path in (upper, work, machine.root):
            path.mkdir(parents=True, exist_ok=True)
        run([
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.base},upperdir={upper},workdir={work}", str(machine.root),
        ])  # fmt: skip
        machine.mounted = True
        root = machine.root
        (root / "etc/hostname").write_text(f"{machine.name}\n")
        # The test's stand-in for Tailscale's MagicDNS: every node's name resolves.
        # A node's own name is its bridge address (as MagicDNS gives the tailnet address),
        # so that servers told to use their name are reachable by the others.
        hosts = ["127.0.0.1 localhost"] + [f"{m.address} {m.name}" for m in self.machines.values()]
        (root / "etc/hosts").write_text("\n".join(hosts) + "\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.ssh_key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)

    def _cgroup_for(self, machine: Machine) -> list[Path]:
        """A cgroup of its own in the systemd hierarchy (v1 name=systemd or unified)."""
        paths = []
        for hierarchy in ("systemd", "unified", ""):
            top = CGROUP_ROOT / hierarchy if hierarchy else CGROUP_ROOT
            if (top / "cgroup.procs").exists():
                path = top / f"{CGROUP_PREFIX}{os.getpid()}-{machine.name}"
                path.mkdir(exist_ok=True)
                paths.append(path)
                if hierarchy != "systemd":
                    break
        return paths

    def _boot(self, machine: Machine) -> None:
        _free_veth(f"vb-{machine.name}")
        machine.cgroups = self._cgroup_for(machine)
        cgroup_procs = [str(p / "cgroup.procs") for p in machine.cgroups]
        command = [
            "systemd-nspawn", "-b", "--register=no", "--keep-unit", "-q",
            "-D", str(machine.root), "-M", machine.name,
            f"--network-bridge={self.bridge}", "--console=passive",
        ]  # fmt: skip
        if self.wheelhouse is not None:
            command.append(f"--bind-ro={self.wheelhouse}:/opt/wheelhouse")

        def enter_cgroup() -> None:
            for procs in cgroup_procs:
                Path(procs).write_text(str(os.getpid()))

        log = open(machine.workdir / "nspawn.log", "wb")  # noqa: SIM115 - lives with the process
        machine.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Enter the cgroup between fork and exec: the test process has no other threads
            # that could hold a lock at that moment.
            preexec_fn=enter_cgroup, start_new_session=True,  # noqa: PLW1509
        )  # fmt: skip

    def _wait_booted(self, machine: Machine, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if machine.process.poll() is not None:
                log = (machine.workdir / "nspawn.log").read_text(errors="replace")
                raise RuntimeError(f"{machine.name}: systemd-nspawn exited:\n{log[-3000:]}")
            if not machine.leader:
                machine.leader = _container_init(machine.process.pid)
            if machine.leader:
                state = run(
                    ["nsenter", "-t", str(machine.leader), "-a", "systemctl",
                     "is-system-running", "--wait"],
                    timeout_s=max(1, deadline - time.monotonic()), check=False,
                ).stdout.strip()  # fmt: skip
                if state in {"running", "degraded"}:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{machine.name}: not booted within {timeout_s:.0f} s")

    def _configure_network(self, machine: Machine) -> None:
        prefix = self.subnet.prefixlen
        enter = ["nsenter", "-t", str(machine.leader), "-n"]
        run([*enter, "ip", "addr", "replace", f"{machine.address}/{prefix}", "dev", "host0"])
        run([*enter, "ip", "link", "set", "host0", "up"])
        run([*enter, "ip", "route", "replace", "default", "via", self.gateway])

    def _wait_ssh(self, machine: Machine, timeout_s: float) -> None:
        def answers() -> bool:
            with contextlib.suppress(OSError), socket.create_connection((machine.address, 22), 1):
                return True
            return False

        if not wait_until(answers, timeout_s):
            raise RuntimeError(f"{machine.name}: ssh not reachable at {machine.address}")

    # -- use ------------------------------------------------------------------------------

    def inventory(self, path: Path) -> Path:
        """An inventory that only says how to reach the hosts (names stay the garage's)."""
        ssh_args = (
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o ControlMaster=auto -o ControlPersist=300s"
        )
        lines = ["all:", "  hosts:"]
        for m in self.machines.values():
            lines += [
                f"    {m.name}:",
                f"      ansible_host: {m.address}",
                "      ansible_user: root",
                f"      ansible_ssh_private_key_file: {self.ssh_key}",
                f"      ansible_ssh_common_args: '{ssh_args}'",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- teardown -------------------------------------------------------------------------

    def destroy(self) -> None:
        for machine in self.machines.values():
            _stop(machine)
        for machine in self.machines.values():
            # The host's end of its veth can outlive the machine (seen for one in three).
            run(["ip", "link", "del", f"vb-{machine.name}"], check=False)
            if machine.mounted:
                _unmount_tree(machine.root)
                machine.mounted = False
            for cgroup in reversed(machine.cgroups):
                _remove_cgroup(cgroup)
        if self.bridge_created:
            run(["ip", "link", "del", self.bridge], check=False)
            self.bridge_created = False
        shutil.rmtree(self.workdir, ignore_errors=True)


def _owner_gone(pid: int) -> bool:
    """A run's pid names what it created: it is abandoned when that process is gone (or
    when the pid is ours: a killed run's pid handed to this one)."""
    return pid == os.getpid() or not Path(f"/proc/{pid}").exists()


def _pid_suffix(name: str, prefix: str) -> int | None:
    rest = name.removeprefix(prefix).split("-")[0]
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


def sweep_abandoned_garages(workroot: Path) -> list[str]:
    """Remove what runs killed before their clean-up left on the host — containers still
    running in their cgroups, overlay mounts, work directories, bridges — so that the next
    run starts clean. Returns what was removed, for the log."""
    removed: list[str] = []
    cgroups = [
        path
        for top in (CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified", CGROUP_ROOT)
        if top.is_dir()
        for path in top.glob(f"{CGROUP_PREFIX}*")
        if (pid := _pid_suffix(path.name, CGROUP_PREFIX)) is not None and _owner_gone(pid)
    ]
    for cgroup in cgroups:
        _kill_cgroup(cgroup)
    for workdir in workroot.glob(f"{WORKDIR_PREFIX}*"):
        pid = _pid_suffix(workdir.name, WORKDIR_PREFIX)
        if pid is not None and _owner_gone(pid):
            _unmount_tree(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(str(workdir))
    for cgroup in cgroups:
        _remove_cgroup(cgroup)
        removed.append(str(cgroup))
    for line in run(["ip", "-o", "link", "show", "type", "bridge"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        pid = _pid_suffix(name, BRIDGE_PREFIX)
        if pid is not None and _owner_gone(pid):
            run(["ip", "link", "del", name], check=False)
            removed.append(f"bridge {name}")
    return removed


def _free_veth(name: str, timeout_s: float = 30) -> None:
    """nspawn names the host's end of a machine's veth ``vb-<machine>`` and fails if it
    exists: one left by the machine of an earlier run (the kernel frees it with the
    machine's network namespace, a moment after its processes end) is waited for, then
    removed."""
    if not wait_until(lambda: run(["ip", "link", "show", name], check=False).returncode != 0,
                      timeout_s):  # fmt: skip
        run(["ip", "link", "del", name], check=False)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    return []


def _container_init(nspawn_pid: int) -> int:
    """The container's PID 1 seen from the host: a descendant of nspawn running systemd."""
    todo = list(_children(nspawn_pid))
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
        todo.extend(_children(pid))
    return 0


def _stop(machine: Machine, timeout_s: float = 60) -> None:
    process = machine.process
    if process is None or process.poll() is not None:
        return
    # SIGRTMIN+4 asks systemd for a clean poweroff; nspawn exits when the container does.
    if machine.leader:
        with contextlib.suppress(ProcessLookupError):
            os.kill(machine.leader, signal.SIGRTMIN + 4)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    # Anything left in the machine's cgroups (should be nothing) goes too.
    for cgroup in machine.cgroups:
        _kill_cgroup(cgroup)


def _kill_cgroup(cgroup: Path) -> None:
    """SIGKILL every process in ``cgroup`` and below it."""
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def _unmount_tree(root: Path) -> None:
    """Unmount root and anything mounted below it (nspawn leaves nothing, but be sure)."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == str(root) or line.split()[1].startswith(f"{root}/")
    ]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        run(["umount", "-l", mountpoint], check=False)


def _remove_cgroup(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            path.rmdir()
        time.sleep(0.2)
