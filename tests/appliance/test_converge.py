"""site.yml converged with the garage inventory into three booted systemd containers."""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import pytest
import yaml

from tests.appliance.ansible import REPO

pytestmark = [pytest.mark.appliance, pytest.mark.slow]

GARAGE = REPO / "inventory/garage"
# Where the garage inventory places each server (the test-vars pick the tansu/nx27017 engines).
SERVERS = {
    "lenovo": ["prometheus-node-exporter", "prometheus"],
    "optiplex": ["prometheus-node-exporter", "kafka", "nx-27017", "mariadb", "spark-master"],
    "prodesk": ["prometheus-node-exporter", "spark-worker"],
}
# casatwin-<service>: (its inventory group, its `casatwin` command).
SERVICES = {
    "simulator": ("simulator", "simulator"),
    "gateway": ("gateway", "gateway"),
    "gateway-fake-api": ("gateway_fake_api", "gateway"),
    "processor": ("processor", "processor"),
    "dispatcher": ("dispatcher", "dispatcher"),
    "dashboard": ("dashboard", "dashboard"),
}


def commands_of_this_version() -> set[str]:
    """The `casatwin` commands of the wheel under test (built from this tree)."""
    from casatwin.cli import build_parser

    parser = build_parser()
    actions = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(next(actions).choices)


def garage_services_enabled() -> dict[str, bool]:
    return yaml.safe_load((GARAGE / "group_vars/all/main.yml").read_text())[
        "casatwin_services_enabled"
    ]


def placed_on(node: str) -> list[str]:
    """casatwin-* units the garage inventory puts on a node (switched-on services only)."""
    inventory = yaml.safe_load((GARAGE / "hosts.yml").read_text())["all"]["children"]
    tier = next(name for name, group in inventory.items() if node in (group.get("hosts") or {}))
    enabled, commands = garage_services_enabled(), commands_of_this_version()
    return [
        f"casatwin-{service}"
        for service, (group, command) in SERVICES.items()
        if enabled.get(service)
        and command in commands  # the role skips a service this version lacks
        and tier in inventory[group].get("children", {})
    ]


def expected_units(node: str) -> list[str]:
    return SERVERS[node] + placed_on(node)


def test_site_converges(converged):
    run = converged.first
    assert run.returncode == 0, f"site.yml failed (log: {run.log}):\n{run.tail()}"
    recap = run.recap()
    assert set(recap) == set(SERVERS), recap
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), recap


def test_memory_plan_printed_for_every_node(converged):
    for node in SERVERS:
        assert f"memory plan of {node}: 8192 MB total" in converged.first.output


@pytest.mark.parametrize("node", sorted(SERVERS))
def test_every_unit_is_active(converged, node):
    machine = converged.machine(node)
    units = expected_units(node)
    deadline = time.monotonic() + 90
    while True:
        states = machine.sh(f"systemctl is-active {' '.join(units)} || true").split()
        if all(state == "active" for state in states) or time.monotonic() > deadline:
            break
        time.sleep(2)
    inactive = {u: s for u, s in zip(units, states) if s != "active"}
    details = "\n".join(machine.journal(u) for u in inactive)
    assert not inactive, f"{node}: not active: {inactive}\n{details}"


@pytest.mark.parametrize("node", sorted(SERVERS))
def test_unit_files_pass_systemd_analyze_verify(converged, node):
    """The rendered units, under their real names and paths, where their binaries exist."""
    machine = converged.machine(node)
    ours = [u for u in expected_units(node) if not u.startswith(("prometheus", "mariadb"))]
    paths = " ".join(f"/etc/systemd/system/{u}.service" for u in ours)
    if not paths:
        pytest.skip(f"no unit of ours on {node}")
    out = machine.sh(f"systemd-analyze verify {paths} 2>&1; echo rc=$?")
    assert out.strip().endswith("rc=0"), f"{node}: systemd-analyze verify:\n{out}"


def test_spark_worker_registered_with_master_on_another_node(converged):
    master = converged.machine("optiplex")
    url = f"http://{master.address}:8090/json/"
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                workers = json.load(response)["workers"]
        except OSError:
            workers = []
        if any(w["host"] == "prodesk" and w["state"] == "ALIVE" for w in workers):
            break
        time.sleep(2)
    alive = [(w["host"], w["state"], w["cores"], w["memory"]) for w in workers]
    assert any(h == "prodesk" and s == "ALIVE" for h, s, _, _ in alive), alive
    # The worker offers exactly what the memory plan gave it, not Spark's RAM-minus-1GB.
    worker = next(w for w in workers if w["host"] == "prodesk")
    unit = converged.machine("prodesk").sh("systemctl cat spark-worker.service")
    assert f"--memory {worker['memory']}M" in unit


def test_bus_is_reachable_from_the_other_nodes_and_has_the_topics(converged):
    """The edge node lists the topics that the services tier created on the broker node."""
    out = converged.machine("lenovo").sh(
        "set -a; . /etc/casatwin/casatwin.env; /opt/casatwin/venv/bin/casatwin topics list"
    )
    assert "casatwin.telemetry" in out and "casatwin.infractions" in out, out


# What the dashboard's account must not do (MariaDB refuses: 1142, command denied).
DASHBOARD_REFUSED = {
    "create a table": "CREATE TABLE intruder (id INT)",
    "change the audit": "UPDATE identity_views SET operator = 'intruder'",
    "delete the audit": "DELETE FROM identity_views",
    "add an operator": "INSERT INTO dashboard_operators (name, password_hash) VALUES ('x', 'y')",
    "change a password": "UPDATE dashboard_operators SET password_hash = 'intruder'",
    "write the ledger": "INSERT INTO infractions (infraction_id) VALUES ('intruder')",
}


def test_each_service_account_has_only_its_privileges(converged):
    """MariaDB on the broker node, reached from the compute node with the vault's passwords.
    The dashboard reads, writes the audit of identity views and nothing else; the migrator
    owns the schema."""
    script = r"""
import os, pymysql
kw = dict(host="optiplex", database="casatwin", connect_timeout=10)
pw = dict(line.strip().split("=", 1) for line in open("/run/pw") if "=" in line)
reader = pymysql.connect(user="casatwin_dashboard", password=pw["dashboard"], **kw)
cur = reader.cursor()
cur.execute("SELECT COUNT(*) FROM dashboard_operators")
cur.execute("SELECT COUNT(*) FROM identity_views")
print("dashboard reads")
cur.execute(
    "INSERT INTO identity_views (operator, infraction_id, driver_ref, client_address, request) "
    "VALUES ('appliance-test', 'none', '', '', 'privilege check')"
)
reader.rollback()  # allowed, and left no row
print("dashboard audits")
for what, sql in REFUSED.items():
    try:
        cur.execute(sql)
        print("dashboard could", what)
    except pymysql.MySQLError as exc:
        print("refused", what, exc.args[0])
reader.rollback()
owner = pymysql.connect(user="casatwin_migrator", password=pw["migrator"], **kw)
owner.cursor().execute("CREATE TABLE IF NOT EXISTS appliance_probe (id INT)")
owner.cursor().execute("DROP TABLE appliance_probe")
print("migrator ok")
"""
    passwords = _vault_passwords(converged)
    prodesk = converged.machine("prodesk")
    (prodesk.root / "run").mkdir(exist_ok=True)
    prodesk.sh(
        "cat > /run/pw <<'EOF'\n"
        + "\n".join(f"{k}={v}" for k, v in passwords.items())
        + "\nEOF\nchmod 600 /run/pw"
    )
    script = f"REFUSED = {DASHBOARD_REFUSED!r}\n" + script
    out = prodesk.sh(f"/opt/casatwin/venv/bin/python - <<'EOF'\n{script}\nEOF")
    assert "dashboard reads" in out and "dashboard audits" in out, out
    for what in DASHBOARD_REFUSED:
        assert f"refused {what} 1142" in out, (what, out)  # 1142: command denied to user
    assert "migrator ok" in out, out


def test_read_model_server_is_reachable_from_the_compute_node(converged):
    out = converged.machine("prodesk").sh(
        '/opt/casatwin/venv/bin/python -c "import pymongo; '
        "print(pymongo.MongoClient('mongodb://optiplex:27017', serverSelectionTimeoutMS=5000)"
        ".admin.command('ping'))\""
    )
    assert "'ok': 1" in out, out


# The scripted violators of scenarios/e2e.yaml and what each does (docs/scenarios.md).
SCRIPTED = {"TX-00101": "speeding", "TX-00102": "red_light"}
# The speeder drives at t=30..50 s; the red-light runner crosses at the first red after
# t=60 s, which depends on the wall clock (signal plans run in epoch time): up to one
# 90 s cycle of Place Mohammed V later. 90 s of simulation missed it about half the time.
E2E_SECONDS = 170


def _history(node_address: str, vehicle: str) -> list[dict]:
    """The dashboard's history API, from the host, as anyone sees it."""
    url = f"http://{node_address}:8080/api/infractions?vehicle={vehicle}&limit=50"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["items"]


def _ledger(converged) -> dict[str, tuple[str, str]]:
    """infraction_id -> (vehicle, type) of every infraction in the MariaDB ledger."""
    passwords = _vault_passwords(converged)
    script = (
        "import pymysql; c = pymysql.connect(host='optiplex', database='casatwin', "
        f"user='casatwin_migrator', password={passwords['migrator']!r}); cur = c.cursor(); "
        "cur.execute('SELECT infraction_id, vehicle_id, type FROM infractions'); "
        "print('\\n'.join(' '.join(map(str, row)) for row in cur.fetchall()))"
    )
    out = converged.machine("prodesk").sh(f'/opt/casatwin/venv/bin/python -c "{script}"')
    return {i: (v, t) for i, v, t in (line.split() for line in out.splitlines() if line)}


def test_scripted_infractions_flow_end_to_end_across_a_processor_restart(converged):
    """scenarios/e2e.yaml played on the edge node; casatwin-processor restarted while the
    speeder drives; every scripted infraction reaches the ledger and the dashboard's
    history API exactly once, and nothing the ledger held before the restart is lost."""
    edge, compute = converged.machine("lenovo"), converged.machine("prodesk")
    (edge.root / "root/e2e.yaml").write_text((REPO / "scenarios/e2e.yaml").read_text())
    # A second simulator, only the scripted taxis (the service's 50 are TX-00001..50),
    # no metrics port (the service has 9401).
    edge.sh(
        "systemd-run --unit=casatwin-e2e --property=EnvironmentFile=/etc/casatwin/casatwin.env "
        "--setenv=CASATWIN_SIMULATOR_METRICS_PORT=0 --setenv=CASATWIN_GENERAL_DATA_DIR=/tmp "
        "/opt/casatwin/venv/bin/casatwin simulator --scenario /root/e2e.yaml --taxis 0 "
        f"--seconds {E2E_SECONDS}"
    )
    time.sleep(35)  # the speeder is on Boulevard Zerktouni now
    before = _ledger(converged)
    compute.sh("systemctl restart casatwin-processor", timeout_s=180)
    assert compute.sh("systemctl is-active casatwin-processor", check=False).strip() == "active"

    deadline, found = time.monotonic() + 420, {}
    while time.monotonic() < deadline:
        found = {}
        for vehicle in SCRIPTED:
            try:
                found[vehicle] = [i["type"] for i in _history(edge.address, vehicle)]
            except OSError:
                found[vehicle] = []
        if all(SCRIPTED[v] in found[v] for v in SCRIPTED):
            break
        time.sleep(5)
    journal = compute.journal("casatwin-processor", lines=30)
    assert all(SCRIPTED[v] in found[v] for v in SCRIPTED), f"history API: {found}\n{journal}"
    assert all(found[v].count(SCRIPTED[v]) == 1 for v in SCRIPTED), found

    after = _ledger(converged)
    assert set(before) <= set(after), f"lost across the restart: {set(before) - set(after)}"
    scripted = sorted(x for x in after.values() if x[0] in SCRIPTED)
    assert scripted == sorted(SCRIPTED.items()), scripted
    simulator = edge.sh("systemctl show -p Result,ExecMainStatus casatwin-e2e", check=False)
    assert "ExecMainStatus=0" in simulator, simulator


def test_operator_added_by_the_playbook_sees_an_identity_and_the_view_is_audited(converged):
    """playbooks/add-operator.yml adds an operator as the migrator account; logged in from the
    host, the operator sees a driver's identity, which the dashboard's own account audits
    first (its one write)."""
    import secrets

    from tests.appliance import ansible

    name, password = "appliance.operator", secrets.token_urlsafe(18)
    run = ansible.playbook(
        [*converged.args, "-e", f"casatwin_operator_name={name}",
         "-e", f"casatwin_operator_password={password}"],
        converged.logs / "add-operator.log", timeout_s=300, playbook="playbooks/add-operator.yml",
    )  # fmt: skip
    assert run.returncode == 0, f"add-operator failed (log: {run.log}):\n{run.tail()}"
    assert f"operator {name} created" in run.output, run.tail()
    assert password not in run.output

    edge = converged.machine("lenovo")
    base = f"http://{edge.address}:8080"
    login = urllib.request.Request(
        f"{base}/api/login", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"name": name, "password": password}).encode(),
    )  # fmt: skip
    with urllib.request.urlopen(login, timeout=30) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    infraction = _history(edge.address, next(iter(SCRIPTED)))[0]["infraction_id"]
    url = f"{base}/api/infractions/{infraction}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.load(response)["identity"] == "masked"  # anyone
    as_operator = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(as_operator, timeout=10) as response:
        assert json.load(response)["identity"] == "shown"  # once the view is audited

    passwords = _vault_passwords(converged)
    script = (
        "import pymysql; c = pymysql.connect(host='optiplex', database='casatwin', "
        f"user='casatwin_migrator', password={passwords['migrator']!r}); cur = c.cursor(); "
        "cur.execute('SELECT COUNT(*) FROM identity_views WHERE operator = %s AND "
        f"infraction_id = %s', ({name!r}, {infraction!r})); print('views', cur.fetchone()[0])"
    )
    out = converged.machine("prodesk").sh(f'/opt/casatwin/venv/bin/python -c "{script}"')
    assert "views 1" in out, out


def test_second_converge_changes_nothing(converged):
    run = converged.playbook(name="converge-again")
    assert run.returncode == 0, f"second run failed (log: {run.log}):\n{run.tail()}"
    changed = {host: r["changed"] for host, r in run.recap().items()}
    assert all(c == 0 for c in changed.values()), (changed, run.changed_tasks())


def test_check_mode_with_diff_runs_clean(converged):
    run = converged.playbook("--check", "--diff", name="check-diff")
    assert run.returncode == 0, f"check mode failed (log: {run.log}):\n{run.tail()}"
    changed = {host: r["changed"] for host, r in run.recap().items()}
    assert all(c == 0 for c in changed.values()), (changed, run.changed_tasks())


def _vault_passwords(converged) -> dict[str, str]:
    import subprocess

    from tests.appliance.ansible import BIN, environment

    plain = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "--vault-password-file",
         str(converged.vault_password), str(converged.vault)],
        env=environment(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return yaml.safe_load(plain)["vault_mariadb_passwords"]
