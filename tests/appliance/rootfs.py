"""The Debian 12 root filesystem the appliance containers boot, built once and cached.

``debootstrap`` runs once per package list (the cache key is a hash of the list), with the
Debian packages the roles install already included: the containers then need no network
beyond the bridge, and the roles' ``apt`` tasks find their packages present. The host's apt
sources and CA certificates are copied in so that an operator can still ``apt-get`` inside.

Run it alone to warm the cache: ``python -m tests.appliance.rootfs``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

# What the roles install from Debian for the test inventory (nx27017 for MongoDB), plus what
# a booted, ssh-reachable Debian needs. Chromium (kiosk) and Grafana are off in the test
# inventory; Apache Kafka (which runs on the java role's JVM) and MongoDB are not Debian
# packages.
PACKAGES = (
    # booting and reaching the machine
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "acl",
    "ca-certificates", "iproute2", "procps", "less",
    # Ansible's own needs on a managed node
    "python3", "python3-apt", "python3-venv", "python3-packaging",
    # role java (Kafka's and Spark's JVM) and role mariadb
    "openjdk-17-jre-headless", "mariadb-server", "mariadb-client", "python3-pymysql",
    # role monitoring
    "prometheus", "prometheus-node-exporter",
    # role firewall
    "nftables",
    # role pki (community.crypto on the node) and the kiosk's trust of the CA (certutil)
    # (debootstrap resolves no virtual package: python3-cffi-backend provides the API
    # python3-cryptography asks for)
    "python3-cryptography", "python3-cffi-backend", "libnss3-tools",
)  # fmt: skip


def cache_dir() -> Path:
    return Path(os.environ.get("CASATWIN_APPLIANCE_CACHE", "/var/cache/casatwin-appliance"))


def rootfs_key() -> str:
    return hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]


def base_rootfs() -> Path:
    """The cached root filesystem, debootstrapped on first use (5-10 min, then instant)."""
    target = cache_dir() / f"rootfs-{SUITE}-{rootfs_key()}"
    if (target / ".complete").exists():
        return target
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    started = time.monotonic()
    print(f"debootstrap {SUITE} into {building} (once; cached after)", file=sys.stderr)
    subprocess.run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            SUITE, str(building), MIRROR,
        ],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _copy_host_apt_and_certs(building)
    _prepare(building)
    (building / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    for stale in cache_dir().glob(f"rootfs-{SUITE}-*"):  # older package lists
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def _copy_host_apt_and_certs(root: Path) -> None:
    """The host's apt sources (the same mirror) and its CA bundle (the same trust)."""
    shutil.copytree("/etc/apt/sources.list.d", root / "etc/apt/sources.list.d", dirs_exist_ok=True)
    host_list, own_list = Path("/etc/apt/sources.list"), root / "etc/apt/sources.list"
    if host_list.exists():
        shutil.copy2(host_list, own_list)
    else:  # the host uses deb822 sources only: debootstrap's one-line list would repeat them
        own_list.unlink(missing_ok=True)
    # Only what Debian ships: other vendors' lists need keys the rootfs does not have.
    for extra in (root / "etc/apt/sources.list.d").iterdir():
        if extra.name != "debian.sources":
            extra.unlink()
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, root / local_cas.relative_to("/"), dirs_exist_ok=True)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")


def _prepare(root: Path) -> None:
    """Fresh package lists (so `apt` with cache_valid_time needs no network) and tidy-ups."""
    subprocess.run(
        ["chroot", str(root), "apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL
    )
    # Package installs started the daemons' postinst without systemd: nothing is running,
    # but they left machine-specific state that every container would share.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Regenerate host keys at boot (Debian's sshd does not do it by itself).
    unit = root / "etc/systemd/system/ssh-keygen.service"
    unit.write_text(
        "[Unit]\nDescription=Generate ssh host keys\nBefore=ssh.service\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "ssh-keygen.service"
    if not link.exists():
        link.symlink_to("/etc/systemd/system/ssh-keygen.service")
    # The system MariaDB and Prometheus stay as the roles leave them: the roles decide.
    (root / "etc/hostname").write_text("appliance\n")


if __name__ == "__main__":
    print(base_rootfs())
