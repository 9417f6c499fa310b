"""site.yml converged with the garage inventory into three booted systemd containers."""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import re
import shlex
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
import yaml

from casatwin.appliance import REPO, role_plugin
from casatwin.waiting import wait_until
from tests.appliance.ansible import pyspark_version

pytestmark = [pytest.mark.appliance, pytest.mark.slow]

GARAGE = REPO / "inventory/garage"
# Where the garage inventory places each server (the test vars pick nx-27017 for MongoDB),
# with Apache Kafka on every node (garage-test-inventory.yml: three KRaft voters).
SERVERS = {
    "lenovo": ["prometheus-node-exporter", "kafka", "prometheus"],
    "optiplex": ["prometheus-node-exporter", "kafka", "nx-27017", "mariadb", "spark-master"],
    "prodesk": ["prometheus-node-exporter", "kafka", "spark-worker"],
}
KAFKA_NODES = ("lenovo", "optiplex", "prodesk")
# garage-test-vars.yml gives each broker a 640 MB budget: heap 640 - 256 MB off heap.
KAFKA_HEAP_MB = 384
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
    """The edge node lists the topics that the services tier created on the broker node
    (as Kafka's admin: a listing shows only the topics the principal may see)."""
    edge = converged.machine("lenovo")
    out = edge.sh(
        f"set -a; . /etc/casatwin/casatwin.env; {kafka_admin(converged, edge)} "
        "/opt/casatwin/venv/bin/casatwin topics list"
    )
    assert "casatwin.telemetry" in out and "casatwin.infractions" in out, out


# Run with the services' venv on a node: what a client without a password, or with the
# simulator's, gets from the bus. Prints one verdict per line.
BUS_DOORS = r"""
import confluent_kafka.admin
from casatwin.bus.consumer import reader
from casatwin.config import load
from casatwin.errors import UserError
settings = load().kafka
anonymous = confluent_kafka.admin.AdminClient({"bootstrap.servers": settings.bootstrap})
try:
    anonymous.list_topics(timeout=5)
    print("anonymous: served")
except confluent_kafka.KafkaException as exc:
    print("anonymous:", exc.args[0].name())
try:
    reader(settings, ["casatwin.infractions"], "casatwin-simulator-doors").close()
    print("simulator reads infractions: yes")
except UserError as exc:
    print("simulator reads infractions:", exc.message)
"""


def test_the_bus_refuses_strangers_and_keeps_each_service_to_its_topics(converged):
    """From the edge node: no password, no bus; the simulator's own user (its password file
    from the vault, the service's) may not read the infractions."""
    edge = converged.machine("lenovo")
    assert edge.sh("stat -c '%a %U' /etc/casatwin/secrets/kafka/simulator.password").split() == [
        "600",
        "casatwin-simulator",
    ]
    out = edge.sh(
        "set -a; . /etc/casatwin/casatwin.env; CASATWIN_KAFKA_USER=simulator "
        "CASATWIN_KAFKA_CREDENTIALS_DIR=/etc/casatwin/secrets/kafka "
        f"/opt/casatwin/venv/bin/python - <<'EOF'\n{BUS_DOORS}\nEOF"
    )
    assert "anonymous: _TRANSPORT" in out, out
    assert "simulator reads infractions: the Kafka user 'simulator' may not use topic" in out, out


def kafka_admin(converged, machine) -> str:
    """Kafka's admin password from the test's vault in a root-only file on ``machine``; the
    variables that make a `casatwin` command there log in as admin."""
    secret = _vault(converged)["vault_kafka_passwords"]["admin"]
    machine.sh(
        "install -d -m 0700 /root/kafka-admin && "
        f"(umask 077; printf '%s\\n' {shlex.quote(secret)} > /root/kafka-admin/admin.password)"
    )
    return "CASATWIN_KAFKA_USER=admin CASATWIN_KAFKA_CREDENTIALS_DIR=/root/kafka-admin"


# -- Apache Kafka, live ----------------------------------------------------------------------

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
BOOTSTRAP = "optiplex:9092"
# The kafka role's admin client configuration (SASL as admin), which its health checks use.
ADMIN_CLIENT = "/etc/kafka/admin-client.properties"
health = role_plugin("kafka", "filter_plugins/kafka_health.py")


def kafka_tool(machine, main_class: str, *args: str) -> str:
    """One of Kafka's tools on a node, run as the kafka role runs them: its JVM, the installed
    archive's class path, the role's logging for tools (the answer alone on stdout)."""
    command = [
        JAVA, "-Xmx256m", "-XX:+UseSerialGC",
        "-Dlog4j2.configurationFile=/etc/kafka/tools-log4j2.yaml",
        "-cp", "/opt/kafka/libs/*", main_class, *args,
    ]  # fmt: skip
    return machine.sh(shlex.join(command), timeout_s=180)


def properties(machine, path: str) -> dict[str, str]:
    lines = machine.sh(f"cat {path}").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_kafka_runs_the_archive_from_the_controller_on_every_node(converged):
    """The archive handed over from the controller (kafka_archive_src, its SHA-512 checked),
    unpacked and linked; kafka.Kafka on the JVM as the kafka user with the planned heap, its
    log written through the role's log4j2 configuration; one cluster id everywhere."""
    archive = converged.kafka_archive
    cluster_ids = set()
    for node in KAFKA_NODES:
        machine = converged.machine(node)
        cached = machine.sh(f"sha512sum /var/cache/casatwin/{archive.name}.tgz").split()[0]
        assert cached == archive.sha512, node
        assert machine.sh("readlink /opt/kafka").strip() == f"/opt/{archive.name}", node
        pid = machine.sh("systemctl show -P MainPID kafka.service").strip()
        argv = machine.sh(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").splitlines()
        assert argv[0] == JAVA and argv[-2:] == ["kafka.Kafka", "/etc/kafka/server.properties"]
        assert {f"-Xms{KAFKA_HEAP_MB}m", f"-Xmx{KAFKA_HEAP_MB}m"} <= set(argv), argv
        assert machine.sh(f"stat -c %U /proc/{pid}").strip() == "kafka", node
        log = machine.sh("cat /var/log/kafka/server.log")
        assert "Kafka Server started (kafka.server.KafkaRaftServer)" in log, node
        cluster_ids.add(properties(machine, "/var/lib/kafka/meta.properties")["cluster.id"])
    assert len(cluster_ids) == 1, cluster_ids


def test_kraft_quorum_has_the_three_nodes_as_voters_and_one_leader(converged):
    machine = converged.machine("lenovo")
    status = kafka_tool(
        machine, "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server", BOOTSTRAP, "--command-config", ADMIN_CLIENT, "describe", "--status",
    )  # fmt: skip
    cells = (line.split(":", 1) for line in status.splitlines() if ":" in line)
    fields = {name.strip(): value.strip() for name, value in cells}
    voters = {v["id"]: v["endpoints"] for v in json.loads(fields["CurrentVoters"])}
    for node in KAFKA_NODES:
        node_id = properties(converged.machine(node), "/etc/kafka/server.properties")["node.id"]
        assert voters.get(int(node_id)) == [f"CONTROLLER://{node}:9093"], (node, voters)
    assert sorted(voters) == [1, 2, 3] and json.loads(fields["CurrentObservers"]) == []
    assert int(fields["LeaderId"]) in voters, fields
    meta = properties(converged.machine("optiplex"), "/var/lib/kafka/meta.properties")
    assert fields["ClusterId"] == meta["cluster.id"]
    replication = kafka_tool(
        machine, "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server", BOOTSTRAP, "--command-config", ADMIN_CLIENT,
        "describe", "--replication",
    )  # fmt: skip
    assert health.kafka_quorum_problems(replication, [1, 2, 3], 1000) == [], replication


def describe_topics(machine) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]:
    """TopicCommand --describe: each topic's summary, and its partitions' rows."""
    out = kafka_tool(
        machine, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BOOTSTRAP,
        "--command-config", ADMIN_CLIENT, "--describe",
    )  # fmt: skip
    summaries, partitions = {}, {}
    for line in out.splitlines():  # tab-separated "Name: value" cells
        cells = (cell.split(":", 1) for cell in line.strip().split("\t") if ":" in cell)
        fields = {name.strip(): value.strip() for name, value in cells}
        if "PartitionCount" in fields:
            summaries[fields["Topic"]] = fields
        elif "Partition" in fields:
            partitions.setdefault(fields["Topic"], []).append(fields)
    return summaries, partitions


def test_topics_are_replicated_on_the_three_brokers(converged):
    """What `casatwin topics create` made on the broker's defaults: each topic with its
    partitions, three replicas of each partition all in sync, two needed to acknowledge."""
    from casatwin.bus import topics
    from casatwin.config import KafkaSettings

    summaries, partitions = describe_topics(converged.machine("prodesk"))
    for spec in topics.TOPICS:
        summary = summaries.get(spec.name)
        assert summary, (spec.name, sorted(summaries))
        expected = topics.partitions_for(spec, KafkaSettings().partitions)
        assert (summary["PartitionCount"], summary["ReplicationFactor"]) == (str(expected), "3")
        assert "min.insync.replicas=2" in summary["Configs"], summary
        rows = partitions[spec.name]
        assert len(rows) == expected
        for row in rows:
            assert len(row["Replicas"].split(",")) == 3 and len(row["Isr"].split(",")) == 3, row
    # The consumer groups' offsets (the processor's and the dispatcher's) are as durable.
    assert summaries["__consumer_offsets"]["ReplicationFactor"] == "3"


def test_processor_reads_kafka_with_sparks_connector_on_the_cluster(converged):
    """The processor (a driver of the standalone cluster) reads both queries with Spark's own
    Kafka source, whose jars the spark role put in CASATWIN_GENERAL_JARS_DIR/spark-kafka."""
    compute = converged.machine("prodesk")
    env = properties(compute, "/etc/casatwin/processor.env")
    assert env["CASATWIN_PROCESSOR_MASTER"] == "spark://optiplex:7077"
    jars = compute.sh(f"ls {env['CASATWIN_GENERAL_JARS_DIR']}/spark-kafka").split()
    assert f"spark-sql-kafka-0-10_2.13-{pyspark_version()}.jar" in jars, jars
    deadline, reads = time.monotonic() + 300, {}
    while time.monotonic() < deadline and len(reads) < 2:
        journal = compute.sh("journalctl -u casatwin-processor -o cat --no-pager | grep '^{' || :")
        events = (json.loads(line) for line in journal.splitlines())
        reads = {e["query"]: e["sources"] for e in events if e.get("event") == "query reads"}
        time.sleep(5)
    assert set(reads) == {"infractions", "congestion"}, reads
    for query, sources in reads.items():
        assert sources and all(s.startswith("KafkaV2[") for s in sources), (query, sources)


# What the dashboard's account must not do (MariaDB refuses: 1142, command denied).
DASHBOARD_REFUSED = {
    "create a table": "CREATE TABLE intruder (id INT)",
    "read the audit": "SELECT COUNT(*) FROM identity_views",
    "change the audit": "UPDATE identity_views SET operator = 'intruder'",
    "delete the audit": "DELETE FROM identity_views",
    "add an operator": "INSERT INTO dashboard_operators (name, password_hash) VALUES ('x', 'y')",
    "change a password": "UPDATE dashboard_operators SET password_hash = 'intruder'",
    "write the ledger": "INSERT INTO infractions (infraction_id) VALUES ('intruder')",
}


# How the services reach MariaDB (casatwin.registry.db with CASATWIN_MARIADB_TLS_CA_FILE):
# TLS, the certificate checked against the appliance's CA and the node's name. Python source,
# in single quotes: the scripts below go through the shell in double quotes.
MARIADB_CA = "/usr/local/share/ca-certificates/casatwin-ca.crt"
MARIADB_TLS = f"dict(ssl={{'ca': '{MARIADB_CA}'}}, ssl_mode='VERIFY_IDENTITY')"


def test_mariadb_speaks_only_tls_with_a_certificate_of_the_appliances_ca(converged):
    """From the edge node: the migrator over TLS with the CA is in (TLS 1.2+); the same
    password without TLS is refused (MariaDB answers 1045 to any client without TLS); the
    services are told the CA; MariaDB's key is mysql's alone."""
    password = _vault_passwords(converged)["migrator"]
    edge = converged.machine("lenovo")
    script = (
        "import sys, MySQLdb\n"
        "for label, tls in (('tls', " + MARIADB_TLS + "), ('plain', {})):\n"
        "    try:\n"
        "        c = MySQLdb.connect(host='optiplex', user='casatwin_migrator', "
        "password=sys.stdin.readline().strip(), connect_timeout=10, **tls)\n"
        "        cur = c.cursor(); cur.execute(\"SHOW SESSION STATUS LIKE 'Ssl_version'\")\n"
        "        print(label, 'in', cur.fetchone()[1] or 'without TLS')\n"
        "    except MySQLdb.MySQLError as exc:\n"
        "        print(label, 'refused', exc.args[0])\n"
    )
    out = edge.sh(
        f"printf '%s\\n%s\\n' {shlex.quote(password)} {shlex.quote(password)} | "
        f"/opt/casatwin/venv/bin/python -c {shlex.quote(script)}"
    )
    assert re.search(r"^tls in TLSv1\.[23]$", out, re.M), out
    assert "plain refused 1045" in out, out
    env = edge.sh("cat /etc/casatwin/casatwin.env")
    assert f"CASATWIN_MARIADB_TLS_CA_FILE={MARIADB_CA}" in env, env
    broker = converged.machine("optiplex")
    assert broker.sh("stat -c '%U %a' /etc/mysql/tls/mariadb.key").strip() == "mysql 600"
    options = broker.sh("cat /etc/mysql/mariadb.conf.d/60-casatwin.cnf")
    assert "require_secure_transport = ON" in options, options


def test_each_service_account_has_only_its_privileges(converged):
    """MariaDB on the broker node, reached from the edge node (the dashboard's: its account
    is bound to that node's address) with the vault's passwords.
    The dashboard reads the operators, writes the audit of identity views (which it cannot
    read back) and nothing else; the migrator owns the schema. (Every account's grants, table
    by table: tests/security/test_mariadb_grants.py.)"""
    script = r"""
import os, MySQLdb
kw = dict(host="optiplex", database="casatwin", connect_timeout=10, **TLS)
pw = dict(line.strip().split("=", 1) for line in open("/run/pw") if "=" in line)
reader = MySQLdb.connect(user="casatwin_dashboard", password=pw["dashboard"], **kw)
cur = reader.cursor()
cur.execute("SELECT COUNT(*) FROM dashboard_operators")
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
    except MySQLdb.MySQLError as exc:
        print("refused", what, exc.args[0])
reader.rollback()
owner = MySQLdb.connect(user="casatwin_migrator", password=pw["migrator"], **kw)
owner.cursor().execute("CREATE TABLE IF NOT EXISTS appliance_probe (id INT)")
owner.cursor().execute("DROP TABLE appliance_probe")
print("migrator ok")
"""
    passwords = _vault_passwords(converged)
    edge = converged.machine("lenovo")
    (edge.root / "run").mkdir(exist_ok=True)
    edge.sh(
        "cat > /run/pw <<'EOF'\n"
        + "\n".join(f"{k}={v}" for k, v in passwords.items())
        + "\nEOF\nchmod 600 /run/pw"
    )
    script = f"REFUSED = {DASHBOARD_REFUSED!r}\nTLS = {MARIADB_TLS}\n" + script
    out = edge.sh(f"/opt/casatwin/venv/bin/python - <<'EOF'\n{script}\nEOF")
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


# -- issue 15: MariaDB accounts bound to their nodes, Spark's shared secret -----------------

# Where each account connects from on the garage (the garage inventory's groups; the
# migrator from every node of the services tier: migrations, registry, add-operator).
MARIADB_ACCOUNT_NODES = {
    "casatwin_migrator": {"lenovo", "prodesk"},
    "casatwin_simulator": {"lenovo"},
    "casatwin_dashboard": {"lenovo"},
    "casatwin_processor": {"prodesk"},
    "casatwin_dispatcher": {"prodesk"},
}


def _resolved(machine, name: str) -> set[str]:
    """What ``name`` resolves to on ``machine`` (loopback left out), as the roles resolve."""
    out = machine.sh(f"getent ahosts {name} | awk '{{print $1}}' | sort -u")
    return {a for a in out.split() if not a.startswith("127.") and a != "::1"}


def test_each_mariadb_account_is_bound_to_its_services_nodes_only(converged):
    """mysql.user: each service's account on the addresses of its nodes (as the MariaDB
    node resolves their names), none from '%' nor from the broker node itself."""
    broker = converged.machine("optiplex")
    out = broker.sh(
        "mariadb --batch --skip-column-names --execute "
        "\"SELECT user, host FROM mysql.user WHERE user LIKE 'casatwin\\\\_%'\""
    )
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        user, host = line.split("\t")
        found.setdefault(user, set()).add(host)
    expected = {
        user: set().union(*(_resolved(broker, node) for node in nodes))
        for user, nodes in MARIADB_ACCOUNT_NODES.items()
    }
    assert all(expected.values()), expected
    assert found == expected, (found, expected)


# Connects as a service's account from the node it runs on; prints "ok" or the error code.
MARIADB_LOGIN = rf"""
import sys, MySQLdb
try:
    MySQLdb.connect(host="optiplex", user=sys.argv[1], password=sys.stdin.read().strip(),
                    database="casatwin", connect_timeout=10, **{MARIADB_TLS}).close()
    print("ok")
except MySQLdb.MySQLError as exc:
    print("refused", exc.args[0])
"""


@pytest.mark.parametrize(
    ("service", "own", "other"),
    [("processor", "prodesk", "lenovo"), ("dashboard", "lenovo", "prodesk")],
)
def test_a_services_password_is_refused_from_a_node_that_does_not_run_it(
    converged, service, own, other
):
    """The right password, from the service's node: in; from another node: access denied
    (1045, or 1698 as MariaDB 10.11 answers a user it has no account for from that host)
    or host not allowed (1130)."""
    password = _vault_passwords(converged)[service]
    answers = {}
    for node in (own, other):
        machine = converged.machine(node)
        (machine.root / "root/login.py").write_text(MARIADB_LOGIN)
        answers[node] = machine.sh(
            f"printf '%s' {shlex.quote(password)} | "
            f"/opt/casatwin/venv/bin/python /root/login.py casatwin_{service}"
        ).strip()
    assert answers[own] == "ok", answers
    assert answers[other] in ("refused 1045", "refused 1698", "refused 1130"), answers


# A Spark driver on the master's node (whose own connections the firewall lets through):
# registers an application with the standalone master and prints its id.
SPARK_PROBE = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("casatwin-auth-probe").getOrCreate()
print("REGISTERED", spark.sparkContext.applicationId, flush=True)
spark.stop()
"""


def _spark_probe(machine, *conf: str) -> tuple[int, str]:
    # Not /run: a booted container mounts its own tmpfs over it, hiding what the host puts.
    (machine.root / "root/spark_probe.py").write_text(SPARK_PROBE)
    env = machine.sh("systemctl show -P Environment spark-master.service").split()
    home = next(v.split("=", 1)[1] for v in env if v.startswith("SPARK_HOME="))
    java = next(v.split("=", 1)[1] for v in env if v.startswith("JAVA_HOME="))
    out = machine.sh(
        f"cd /tmp && JAVA_HOME={java} PYSPARK_PYTHON=/opt/spark/bin/python "
        f"timeout 240 {home}/bin/spark-submit --master spark://optiplex:7077 "
        "--conf spark.driver.host=optiplex --conf spark.ui.enabled=false "
        f"{' '.join(conf)} /root/spark_probe.py 2>&1; echo rc=$?",
        timeout_s=300, check=False,
    )  # fmt: skip
    return int(out.strip().rsplit("rc=", 1)[1]), out


def test_the_spark_master_refuses_a_driver_without_the_shared_secret(converged):
    """spark.authenticate: a driver without the secret never gets an application id from the
    master (app-...; it gives up: "All masters are unresponsive"); the same driver with the
    daemons' properties file (the vault's secret) does. The secret is on no command line of
    the Spark nodes."""
    master = converged.machine("optiplex")
    _, out = _spark_probe(master)
    assert "REGISTERED app-" not in out, out[-3000:]
    rc, out = _spark_probe(master, "--properties-file /etc/spark/spark-auth.properties")
    assert rc == 0 and "REGISTERED app-" in out, out[-3000:]
    secret = _vault(converged)["vault_spark_auth_secret"]
    for node in ("optiplex", "prodesk"):
        machine = converged.machine(node)
        commands = machine.sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' || :")
        assert secret not in commands, node
    worker_conf = converged.machine("prodesk").sh(
        "stat -c '%a %U %G' /etc/spark/spark-auth.properties"
    )
    assert worker_conf.strip() == "640 root spark", worker_conf
    driver = converged.machine("prodesk").sh(
        "stat -c '%a %U' /etc/casatwin/secrets/spark-auth.properties"
    )
    assert driver.strip() == "600 casatwin-processor", driver


# -- issue 15: a user per service, the firewall ----------------------------------------------


@pytest.mark.parametrize("node", sorted(SERVERS))
def test_each_service_runs_as_its_own_user_and_reads_no_others_env(converged, node):
    """Each casatwin-<service> runs as its own user; its env file (its database password) is
    root's alone, 0600 (systemd reads it as root); no service's user can read another's."""
    machine = converged.machine(node)
    services = [unit.removeprefix("casatwin-") for unit in placed_on(node)]
    if not services:
        pytest.skip(f"no service on {node}")
    for service in services:
        unit = f"casatwin-{service}"
        assert machine.sh(f"systemctl show -P User {unit}").strip() == unit
        pid = machine.sh(f"systemctl show -P MainPID {unit}").strip()
        assert machine.sh(f"stat -c %U /proc/{pid}").strip() == unit, (node, service)
        env = machine.sh(f"stat -c '%a %U %G' /etc/casatwin/{service}.env").strip()
        assert env == "600 root root", (node, service, env)
    for reader, read in itertools.permutations(services, 2):
        out = machine.sh(
            f"runuser -u casatwin-{reader} -- cat /etc/casatwin/{read}.env 2>&1; echo rc=$?",
            check=False,
        )  # fmt: skip
        assert "Permission denied" in out and not out.strip().endswith("rc=0"), (reader, read, out)
    # The settings every service reads hold no secret: anyone on the node may read them.
    assert machine.sh("stat -c %a /etc/casatwin/casatwin.env").strip() == "644"


# The secret files of the vault, each its service's user's alone: (node, file, service).
SECRET_FILES = [
    ("prodesk", "/etc/casatwin/secrets/driver-pseudonym.key", "processor"),
    ("lenovo", "/etc/casatwin/secrets/fake-api-admin.token", "gateway-fake-api"),
]


@pytest.mark.parametrize(("node", "path", "service"), SECRET_FILES)
def test_each_secret_is_readable_by_its_service_only(converged, node, path, service):
    machine = converged.machine(node)
    owner = machine.sh(f"stat -c '%a %U %G' {path}").strip()
    assert owner == f"600 casatwin-{service} casatwin-{service}", owner
    # Its service's user reads it (cat as that user; the count by the shell).
    assert int(machine.sh(f"runuser -u casatwin-{service} -- cat {path} | wc -c")) >= 32
    for unit in placed_on(node):
        if unit != f"casatwin-{service}":
            out = machine.sh(f"runuser -u {unit} -- cat {path} 2>&1; echo rc=$?", check=False)
            assert "Permission denied" in out, (unit, path, out)


def test_spark_shares_the_checkpoints_and_no_service_group(converged):
    """The Spark worker's user is in the checkpoints' group (with the processor's user, and
    no one else), in no casatwin-<service> group nor the former shared one; the checkpoints
    are that group's (setgid) and the processor, restarted by the e2e test, writes them."""
    compute = converged.machine("prodesk")
    groups = compute.sh("id -Gn spark").split()
    assert "casatwin-checkpoints" in groups, groups
    services = {f"casatwin-{service}" for service in SERVICES}
    assert not services & set(groups) and "casatwin" not in groups, groups
    members = compute.sh("getent group casatwin-checkpoints").strip().split(":")[3].split(",")
    assert sorted(members) == ["casatwin-processor", "spark"], members
    directory = compute.sh("stat -c '%a %U %G' /var/lib/casatwin/checkpoints").strip()
    assert directory == "2770 casatwin-processor casatwin-checkpoints", directory
    wrong_group = compute.sh(
        "find /var/lib/casatwin/checkpoints ! -group casatwin-checkpoints | head -5"
    ).strip()
    assert not wrong_group, wrong_group


# Connects to HOST:PORT from the node it runs on: open, refused (nothing listens, or a RST)
# or timeout (dropped: the firewall's policy).
PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except (TimeoutError, socket.timeout):
    print("timeout")
"""


def probe(machine, host: str, port: int, timeout_s: float = 3) -> str:
    return machine.sh(
        f"python3 - {host} {port} {timeout_s} <<'EOF'\n{PROBE}\nEOF", timeout_s=timeout_s + 30
    ).strip()


def test_firewall_is_loaded_on_every_node(converged):
    for node in SERVERS:
        machine = converged.machine(node)
        assert machine.sh("systemctl is-active nftables.service", check=False).strip() == "active"
        table = machine.sh("nft list table inet casatwin")
        assert "policy drop;" in table, (node, table)


# (from, to, port, expected): the same listening port reached from a node the table admits
# and from one it does not, so that "timeout" is the firewall and not a service down.
FIREWALL_PATHS = [
    # node_exporter (every node) is open to Prometheus' node (the edge) only.
    ("lenovo", "optiplex", 9100, "open"),
    ("prodesk", "optiplex", 9100, "timeout"),
    ("lenovo", "prodesk", 9100, "open"),
    ("optiplex", "prodesk", 9100, "timeout"),
    # The bus, to its clients (the services' nodes) and the other brokers.
    ("lenovo", "optiplex", 9092, "open"),
    ("prodesk", "optiplex", 9092, "open"),
    # MariaDB and the read model, to the services' nodes.
    ("prodesk", "optiplex", 3306, "open"),
    ("lenovo", "optiplex", 27017, "open"),
    # The dashboard: to the kiosk (on its own node) and the operators, not to other nodes.
    ("prodesk", "lenovo", 8080, "timeout"),
    # The Spark master's RPC, to the worker and the processor (both on the compute node),
    # and not to the edge node.
    ("prodesk", "optiplex", 7077, "open"),
    ("lenovo", "optiplex", 7077, "timeout"),
    # Loopback is free: a node reaching its own port by its own name.
    ("optiplex", "optiplex", 9100, "open"),
]


@pytest.mark.parametrize(("source", "target", "port", "expected"), FIREWALL_PATHS)
def test_firewall_opens_a_port_only_to_the_nodes_that_use_it(
    converged, source, target, port, expected
):
    got = probe(converged.machine(source), target, port)
    assert got == expected, f"{source} → {target}:{port}: {got}, expected {expected}"


def test_prometheus_scrapes_every_node_through_the_firewall(converged):
    """Prometheus (edge node) reaches node_exporter on the three nodes; asked from the host,
    which the test admits as the operators' machine."""
    url = f"http://{converged.machine('lenovo').address}:9090/api/v1/targets?state=active"
    health: dict[str, str] = {}

    def all_up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                targets = json.load(response)["data"]["activeTargets"]
        except OSError:
            return False
        health.update({
            t["labels"]["instance"]: f"{t['health']} {t.get('lastError', '')}".strip()
            for t in targets if t["labels"]["job"] == "node"
        })  # fmt: skip
        return len(health) == 3 and all(h == "up" for h in health.values())

    assert wait_until(all_up, 120, every_s=5), health


# -- issue 15: HTTPS for the dashboard, the appliance's CA ---------------------------------

CA_TRUST_FILE = "/usr/local/share/ca-certificates/casatwin-ca.crt"  # pki_trust_file
DASHBOARD_KEY = "/etc/casatwin/secrets/dashboard-tls.key"  # casatwin_dashboard_tls_key_file
DASHBOARD_CERT = "/etc/casatwin/tls/dashboard.crt"  # casatwin_dashboard_tls_cert_file
KIOSK_NSSDB = "/home/kiosk/.pki/nssdb"  # the kiosk role's, Chromium's certificate store


# The system's Python on a node, its default context (the system's store): the status of
# the dashboard's health, reached by the node's name.
SYSTEM_STORE_CHECK = r"""
import urllib.error, urllib.request
try:
    print(urllib.request.urlopen("https://lenovo:8080/api/health", timeout=10).status)
except urllib.error.HTTPError as exc:  # 503: unhealthy, but TLS verified
    print(exc.code)
"""


def _ca(converged) -> ssl.SSLContext:
    """A client that trusts the appliance's CA alone (the pki role made it on the controller,
    here the test's directory: conftest's pki_ca_dir)."""
    return ssl.create_default_context(cafile=str(converged.ca_cert))


def _pem_body(pem: str) -> str:
    return "".join(pem.split())


def test_dashboard_serves_https_with_a_certificate_of_the_appliances_ca(converged):
    """From the host (an operator's machine): /api/health over HTTPS, verified against the CA
    by the node's address and by its name (the certificate's SANs), with HSTS; a client that
    does not trust the CA is refused; plain HTTP on the port gets no page."""
    edge = converged.machine("lenovo")
    url = f"https://{edge.address}:8080/api/health"
    answer: dict[str, object] = {}

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=10, context=_ca(converged)) as response:
                answer.update(status=response.status, headers=dict(response.headers))
        except urllib.error.HTTPError as exc:  # 503 while a reader starts: TLS worked
            answer.update(status=exc.code, headers=dict(exc.headers))
        except OSError as exc:
            answer.update(error=repr(exc))
            return False
        return True

    assert wait_until(answers, 90, every_s=3), (answer, edge.journal("casatwin-dashboard"))
    assert answer["status"] in (200, 503), answer
    assert answer["headers"].get("Strict-Transport-Security", "").startswith("max-age="), answer

    raw = socket.create_connection((edge.address, 8080), timeout=10)
    with _ca(converged).wrap_socket(raw, server_hostname="lenovo") as tls:  # by its name
        cert = tls.getpeercert()
        assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
    sans = cert["subjectAltName"]
    assert ("DNS", "lenovo") in sans and ("IP Address", edge.address) in sans, sans
    issuer = dict(field[0] for field in cert["issuer"])
    assert issuer["commonName"].startswith("CasaTwin CA"), issuer

    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context())
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError), untrusted.value
    with pytest.raises((OSError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://{edge.address}:8080/api/health", timeout=10).read()


def test_dashboards_key_is_its_users_alone_and_the_cas_key_stays_on_the_controller(converged):
    """The dashboard's key, made on its node: casatwin-dashboard's alone (0600), unreadable
    by another service's user; its settings name the certificate and Secure cookies. The CA's
    key is on the controller only, encrypted with the vault's passphrase; every node trusts
    the CA's certificate (the system's store), the edge node's own Python with it."""
    edge = converged.machine("lenovo")
    assert edge.sh(f"stat -c '%a %U %G' {DASHBOARD_KEY}").split() == [
        "600", "casatwin-dashboard", "casatwin-dashboard",
    ]  # fmt: skip
    denied = edge.sh(
        f"runuser -u casatwin-simulator -- cat {DASHBOARD_KEY} 2>&1; echo rc=$?", check=False
    )
    assert "Permission denied" in denied and not denied.strip().endswith("rc=0"), denied
    env = properties(edge, "/etc/casatwin/dashboard.env")
    assert env["CASATWIN_DASHBOARD_TLS_CERT_FILE"] == DASHBOARD_CERT, env.keys()
    assert env["CASATWIN_DASHBOARD_TLS_KEY_FILE"] == DASHBOARD_KEY
    assert env["CASATWIN_DASHBOARD_COOKIE_SECURE"] == "true"

    ca_key = (converged.ca_dir / "casatwin-ca.key").read_text()
    assert "ENCRYPTED" in ca_key  # pki_ca_passphrase, from the test's vault
    assert (converged.ca_dir / "casatwin-ca.key").stat().st_mode & 0o077 == 0
    ca_pem = converged.ca_cert.read_text()
    for node in SERVERS:
        machine = converged.machine(node)
        assert _pem_body(machine.sh(f"cat {CA_TRUST_FILE}")) == _pem_body(ca_pem), node
        assert "casatwin-ca.pem" in machine.sh("ls /etc/ssl/certs").split(), node
        keys = machine.sh("grep -rl 'PRIVATE KEY' /usr/local/share/ca-certificates || :")
        assert not keys.strip(), (node, keys)
    # The node's own Python, with the system's store only (no CA file given), by name.
    out = edge.sh(f"python3 - <<'EOF'\n{SYSTEM_STORE_CHECK}\nEOF")
    assert out.split() in (["200"], ["503"]), out


def test_the_kiosks_browser_trusts_the_ca(converged):
    """The garage test has no kiosk (garage-test-vars.yml: a container has no screen): the
    kiosk role's trust tasks alone (tests/appliance/kiosk-trust.yml, on the edge node): the
    CA in the kiosk user's NSS database, which Chromium reads, trusted for servers; a second
    run changes nothing."""
    run = converged.playbook(name="kiosk-trust", playbook="tests/appliance/kiosk-trust.yml")
    assert run.returncode == 0, f"kiosk-trust failed (log: {run.log}):\n{run.tail()}"
    again = converged.playbook(name="kiosk-trust-again", playbook="tests/appliance/kiosk-trust.yml")
    _assert_nothing_changed(again, "kiosk trust, second run")
    edge = converged.machine("lenovo")
    listed = edge.sh(f"certutil -L -d sql:{KIOSK_NSSDB}")
    assert re.search(r"^casatwin-ca\s+C,,\s*$", listed, re.M), listed
    pem = edge.sh(f"certutil -L -d sql:{KIOSK_NSSDB} -n casatwin-ca -a")
    assert _pem_body(pem) == _pem_body(converged.ca_cert.read_text())
    assert edge.sh(f"stat -c %U {KIOSK_NSSDB}/cert9.db").strip() == "kiosk"


# The scripted violators of scenarios/e2e.yaml and what each does (docs/scenarios.md).
SCRIPTED = {"TX-00101": "speeding", "TX-00102": "red_light"}
# The speeder drives at t=30..50 s. The red-light runner crosses at t=66..102 s: 6 s of
# run-up after t=60 s, into a red phase of Place Mohammed V under way then or the next one,
# and signal plans run in epoch time, so where in that range depends on the wall clock at
# the start (the simulator's own scheduling, computed for start times over a whole cycle).
# 170 s of simulation leaves the last crossing 68 s of margin; the test then waits for the
# simulator's end and compares with the ground truth it wrote.
E2E_SECONDS = 170
# Blocks until a vehicle's fix is on the bus, reading casatwin.telemetry from a given time
# on (so it sees the fix even if it starts after it was published); prints its timestamp.
FIX_WATCHER = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition
from casatwin.bus.producer import client_config
from casatwin.config import load
since, key, timeout = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
consumer = Consumer(client_config(load().kafka, "appliance-watch")
                    | {"group.id": "appliance-watch", "enable.auto.commit": False})
topic = "casatwin.telemetry"
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign(consumer.offsets_for_times(
    [TopicPartition(topic, p, since) for p in partitions], timeout=10))
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    msg = consumer.poll(1.0)
    if msg is not None and not msg.error() and msg.key() == key:
        print(msg.timestamp()[1])
        break
else:
    sys.exit(f"no fix of {key.decode()} within {timeout:.0f} s")
"""


def _history(converged, node_address: str, since_ms: int) -> list[dict]:
    """The dashboard's history API, from the host, as anyone sees it (no vehicle ids: a
    search by vehicle is for operators)."""
    url = f"https://{node_address}:8080/api/infractions?from={since_ms}&limit=500"
    with urllib.request.urlopen(url, timeout=10, context=_ca(converged)) as response:
        return json.load(response)["items"]


def _by_vehicle(items: list[dict], ledger: dict[str, tuple[str, str]]) -> dict[str, list[dict]]:
    """The history's infractions by the vehicle the ledger charged."""
    out: dict[str, list[dict]] = {}
    for item in items:
        if item["infraction_id"] in ledger:
            out.setdefault(ledger[item["infraction_id"]][0], []).append(item)
    return out


def _ledger(converged) -> dict[str, tuple[str, str]]:
    """infraction_id -> (vehicle, type) of every infraction in the MariaDB ledger."""
    passwords = _vault_passwords(converged)
    script = (
        "import MySQLdb; c = MySQLdb.connect(host='optiplex', database='casatwin', "
        f"user='casatwin_migrator', password={passwords['migrator']!r}, **{MARIADB_TLS}); "
        "cur = c.cursor(); "
        "cur.execute('SELECT infraction_id, vehicle_id, type FROM infractions'); "
        "print('\\n'.join(' '.join(map(str, row)) for row in cur.fetchall()))"
    )
    out = converged.machine("prodesk").sh(f'/opt/casatwin/venv/bin/python -c "{script}"')
    return {i: (v, t) for i, v, t in (line.split() for line in out.splitlines() if line)}


def test_scripted_infractions_flow_end_to_end_across_a_processor_restart(converged):
    """scenarios/e2e.yaml played on the edge node; casatwin-processor restarted while the
    speeder drives; every infraction of the scripted taxis in the simulator's ground truth
    reaches the ledger and the dashboard's history API exactly once, at the time the ground
    truth says, and nothing the ledger held before the restart is lost."""
    edge, compute = converged.machine("lenovo"), converged.machine("prodesk")
    (edge.root / "root/e2e.yaml").write_text((REPO / "scenarios/e2e.yaml").read_text())
    (edge.root / "root/watch.py").write_text(FIX_WATCHER)
    edge.sh("rm -f /tmp/e2e-truth.json")
    launched_ms = int(time.time() * 1000)
    # A second simulator, only the scripted taxis (the service's 50 are TX-00001..50),
    # no metrics port (the service has 9401).
    edge.sh(
        "systemd-run --unit=casatwin-e2e --property=EnvironmentFile=/etc/casatwin/casatwin.env "
        "--setenv=CASATWIN_SIMULATOR_METRICS_PORT=0 --setenv=CASATWIN_GENERAL_DATA_DIR=/tmp "
        # The simulator's own Kafka user, its password from the vault as the service's.
        "--setenv=CASATWIN_KAFKA_CREDENTIALS_DIR=/etc/casatwin/secrets/kafka "
        "/opt/casatwin/venv/bin/casatwin simulator --scenario /root/e2e.yaml --taxis 0 "
        f"--seconds {E2E_SECONDS} --ground-truth /tmp/e2e-truth.json"
    )
    # The speeder's first fix is on the bus: it drives now (for 20 s), restart under it.
    edge.sh(
        f"set -a; . /etc/casatwin/casatwin.env; {kafka_admin(converged, edge)} "
        f"/opt/casatwin/venv/bin/python /root/watch.py {launched_ms} TX-00101 120",
        timeout_s=150,
    )
    before = _ledger(converged)
    compute.sh("systemctl restart casatwin-processor", timeout_s=180)
    assert compute.sh("systemctl is-active casatwin-processor", check=False).strip() == "active"

    # The simulator ends by itself; its ground truth says what really happened. Judged as
    # the detector judges (consecutive fixes over the limit, at least two): in real time
    # the signal phases follow the wall clock, and a speeder slowed by a light mid-run
    # commits two offences, not one.
    ended = wait_until(
        lambda: "ActiveState=active" not in edge.sh("systemctl show -p ActiveState casatwin-e2e"),
        E2E_SECONDS + 120,
        every_s=5,
    )
    assert ended, edge.journal("casatwin-e2e")
    simulator = edge.sh("systemctl show -p Result,ExecMainStatus casatwin-e2e", check=False)
    assert "Result=success" in simulator and "ExecMainStatus=0" in simulator, simulator
    truth = json.loads(edge.sh("cat /tmp/e2e-truth.json"))
    expected = {
        vehicle: sorted(t["event_ts"] for t in truth if (t["vehicle_id"], t["type"]) == (
            vehicle, kind) and (kind != "speeding" or t["fixes"] >= 2))
        for vehicle, kind in SCRIPTED.items()
    }  # fmt: skip
    assert all(expected.values()), truth

    def detected(found: dict[str, list[dict]]) -> dict[str, list[int]]:
        return {v: sorted(i["event_ts"] for i in found.get(v, []) if i["type"] == kind)
                for v, kind in SCRIPTED.items()}  # fmt: skip

    found: dict[str, list[dict]] = {}

    def all_in_history() -> bool:
        try:
            found.update(_by_vehicle(_history(converged, edge.address, launched_ms - 60_000),
                                     _ledger(converged)))  # fmt: skip
        except OSError:
            return False
        return all(len(detected(found)[v]) >= len(expected[v]) for v in SCRIPTED)

    wait_until(all_in_history, 420, every_s=5)  # a wrong count is reported just below
    journal = compute.journal("casatwin-processor", lines=30)
    got = detected(found)
    for vehicle in SCRIPTED:  # each one exactly once, at the time the ground truth says
        assert len(got[vehicle]) == len(expected[vehicle]), (vehicle, got, expected, journal)
        assert all(abs(a - b) <= 1000 for a, b in zip(got[vehicle], expected[vehicle])), (
            vehicle, got, expected)  # fmt: skip

    after = _ledger(converged)
    assert set(before) <= set(after), f"lost across the restart: {set(before) - set(after)}"
    scripted = sorted(x for x in after.values() if x[0] in SCRIPTED)
    assert scripted == sorted((v, SCRIPTED[v]) for v in SCRIPTED for _ in expected[v]), scripted


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
    base, tls = f"https://{edge.address}:8080", _ca(converged)
    login = urllib.request.Request(
        f"{base}/api/login", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"name": name, "password": password}).encode(),
    )  # fmt: skip
    with urllib.request.urlopen(login, timeout=30, context=tls) as response:
        set_cookie = response.headers["Set-Cookie"]
    cookie = set_cookie.split(";", 1)[0]
    # Over TLS the session cookie is Secure (and as before HttpOnly, SameSite=Strict).
    assert {"Secure", "HttpOnly"} <= {a.strip() for a in set_cookie.split(";")}, set_cookie
    speeder = next(iter(SCRIPTED))
    infraction = next(i for i, (v, _) in _ledger(converged).items() if v == speeder)
    url = f"{base}/api/infractions/{infraction}"
    with urllib.request.urlopen(url, timeout=10, context=tls) as response:
        anyone = json.load(response)
    assert anyone["identity"] == "masked" and anyone["driver"] == {"on_record": True}
    as_operator = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(as_operator, timeout=10, context=tls) as response:
        shown = json.load(response)  # once the view is audited, from the ledger
    assert shown["identity"] == "shown" and shown["driver"]["cin"], shown

    passwords = _vault_passwords(converged)
    script = (
        "import MySQLdb; c = MySQLdb.connect(host='optiplex', database='casatwin', "
        f"user='casatwin_migrator', password={passwords['migrator']!r}, **{MARIADB_TLS}); "
        "cur = c.cursor(); "
        "cur.execute('SELECT COUNT(*) FROM identity_views WHERE operator = %s AND "
        f"infraction_id = %s', ({name!r}, {infraction!r})); print('views', cur.fetchone()[0])"
    )
    out = converged.machine("prodesk").sh(f'/opt/casatwin/venv/bin/python -c "{script}"')
    assert "views 1" in out, out


# -- the rolling restart ---------------------------------------------------------------------

ROLLING_PLAY = "PLAY [Broker tier — Kafka on the running nodes, one at a time (rolling restart)]"
# A producer on the edge node while the brokers roll: acks=all, idempotent, so every message
# the cluster acknowledged must be there afterwards. (Not necessarily once: when a leader
# moves with requests in flight, librdkafka's idempotent producer may bump its epoch and
# send again what it had not seen acknowledged though the old leader had written it; seen
# here once in ~60,000 messages. The twin's consumers absorb it: infraction ids are
# deterministic.)
ROLL_PRODUCER = r"""
import json, os, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from casatwin.bus.credentials import librdkafka_auth
from casatwin.config import load
servers = "lenovo:9092,optiplex:9092,prodesk:9092"
auth = librdkafka_auth(load().kafka)  # as admin (the test's environment says)
admin = AdminClient({"bootstrap.servers": servers} | auth)
for f in admin.create_topics([NewTopic("appliance.roll", num_partitions=3)]).values():
    f.result(30)
producer = Producer({"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "message.timeout.ms": 300000} | auth)
counts = {"sent": 0, "acked": 0, "failed": 0}
def done(err, msg):
    counts["failed" if err else "acked"] += 1
while not os.path.exists("/root/roll.stop"):
    producer.produce("appliance.roll", str(counts["sent"]).encode(), on_delivery=done)
    counts["sent"] += 1
    producer.poll(0.02)
producer.flush(300)
json.dump(counts, open("/root/roll.json", "w"))
"""
ROLL_CONSUMER = r"""
import json
from confluent_kafka import Consumer, TopicPartition
from casatwin.bus.credentials import librdkafka_auth
from casatwin.config import load
topic = "appliance.roll"
consumer = Consumer({"bootstrap.servers": "optiplex:9092", "group.id": "appliance-roll",
                     "enable.auto.commit": False} | librdkafka_auth(load().kafka))
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions}
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # no group: no rebalance
where, left = {}, {p for p, end in ends.items() if end > 0}
while left:
    msg = consumer.poll(30)
    if msg is None:
        break
    if msg.error():
        continue
    where.setdefault(int(msg.value()), []).append([msg.partition(), msg.offset()])
    if msg.offset() + 1 >= ends[msg.partition()]:
        left.discard(msg.partition())
twice = {value: at for value, at in where.items() if len(at) > 1}
print(json.dumps({"records": sum(map(len, where.values())), "values": len(where),
                  "unread_partitions": sorted(left), "duplicates": dict(list(twice.items())[:10])}))
"""


def _task_events(output: str) -> list[tuple[str, str, str]]:
    """(task, host, status) in the order the run printed them, from the rolling play on."""
    events, task = [], ""
    for line in output.split(ROLLING_PLAY, 1)[-1].splitlines():
        header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**$", line)
        if header:
            task = header[1]
        status = re.match(r"^(ok|changed): \[([^\]]+)\]", line)
        if status:
            events.append((task, status[2], status[1]))
    return events


def _unit_times(converged) -> dict[str, tuple[int, int]]:
    """Per node: when kafka last stopped and last became active (monotonic µs: the
    containers share the host's clock)."""
    times = {}
    for node in KAFKA_NODES:
        out = converged.machine(node).sh(
            "systemctl show -P InactiveEnterTimestampMonotonic kafka.service;"
            "systemctl show -P ActiveEnterTimestampMonotonic kafka.service"
        )
        stopped, started = (int(x) for x in out.split())
        times[node] = (stopped, started)
    return times


def _check_roll(converged, run, before: dict[str, tuple[int, int]]) -> None:
    """Every broker restarted, one at a time: each healthy (the quorum caught up, nothing
    under-replicated) before the next was touched, and the next stopped only then."""
    assert run.returncode == 0, f"broker.yml failed (log: {run.log}):\n{run.tail()}"
    events = _task_events(run.output)
    restarts = [h for t, h, st in events if t == "kafka : Restart kafka" and st == "changed"]
    assert sorted(restarts) == sorted(KAFKA_NODES), events

    def at(node: str, task: str, status: str = "ok") -> int:
        return next(
            i for i, (t, h, st) in enumerate(events)
            if h == node and st == status and t.startswith(f"kafka : {task}")
        )  # fmt: skip

    for node, following in itertools.pairwise(restarts):
        assert (
            at(node, "Restart kafka", "changed")
            < at(node, "Wait until every KRaft voter")
            < at(node, "Wait until no partition is under-replicated")
            < at(following, "Restart kafka", "changed")
        ), events
    after = _unit_times(converged)
    assert all(after[n][1] > before[n][1] for n in KAFKA_NODES), (before, after)
    for node, following in itertools.pairwise(restarts):
        assert after[following][0] > after[node][1], (node, following, after)


def test_second_converge_changes_nothing(converged):
    _assert_nothing_changed(converged.playbook(name="converge-again"), "second run")


def test_check_mode_with_diff_runs_clean(converged):
    run = converged.playbook("--check", "--diff", name="check-diff")
    _assert_nothing_changed(run, "check mode")


def _assert_nothing_changed(run, what: str) -> None:
    assert run.returncode == 0, f"{what} failed (log: {run.log}):\n{run.tail()}"
    changed = {host: r["changed"] for host, r in run.recap().items()}
    assert all(c == 0 for c in changed.values()), (changed, run.changed_tasks())


def test_brokers_roll_one_at_a_time_and_lose_nothing_acknowledged(converged):
    """A changed server.properties restarts the running brokers one at a time, each checked
    healthy before the next (playbooks/broker.yml). Meanwhile a producer (acks=all) keeps
    writing: none of its messages failed, and every one acknowledged is there afterwards.

    The last test of the module: it leaves the brokers with the changed setting (putting it
    back would cost another roll, some 3 minutes), and the garage is torn down after it."""
    edge = converged.machine("lenovo")
    edge.sh("rm -f /root/roll.stop /root/roll.json")
    edge.sh(f"cat > /root/roll.py <<'EOF'\n{ROLL_PRODUCER}\nEOF")
    admin = kafka_admin(converged, edge)
    edge.sh(
        "systemd-run --unit=appliance-roll "
        + " ".join(f"--setenv={variable}" for variable in admin.split())
        + " /opt/casatwin/venv/bin/python /root/roll.py"
    )
    producing = edge.sh("systemctl show -p ActiveState appliance-roll")
    assert "ActiveState=active" in producing, edge.journal("appliance-roll")
    try:
        setting = "num.recovery.threads.per.data.dir"
        changed = json.dumps({"kafka_properties": {setting: 2}})
        before = _unit_times(converged)
        run = converged.playbook("-e", changed, name="broker-roll", playbook="playbooks/broker.yml")
        _check_roll(converged, run, before)
        props = properties(edge, "/etc/kafka/server.properties")
        assert props.get(setting) == "2", props
    finally:
        edge.sh("touch /root/roll.stop")
    deadline = time.monotonic() + 360
    while "ActiveState=active" in edge.sh("systemctl show -p ActiveState appliance-roll"):
        assert time.monotonic() < deadline, edge.journal("appliance-roll")
        time.sleep(2)
    assert edge.sh("test -e /root/roll.json && echo done || :").strip(), edge.journal(
        "appliance-roll"
    )
    counts = json.loads(edge.sh("cat /root/roll.json"))
    assert counts["failed"] == 0 and counts["acked"] == counts["sent"] > 100, counts
    consumed = json.loads(
        edge.sh(f"{admin} /opt/casatwin/venv/bin/python - <<'EOF'\n{ROLL_CONSUMER}\nEOF")
    )
    # The values sent are 0..sent-1: as many distinct ones as acknowledged = none lost.
    assert consumed["values"] == counts["acked"], (consumed, counts)
    assert not consumed["unread_partitions"], consumed


def _vault(converged) -> dict:
    """The test session's vault, decrypted."""
    import subprocess

    from tests.appliance.ansible import BIN, environment

    plain = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "--vault-password-file",
         str(converged.vault_password), str(converged.vault)],
        env=environment(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return yaml.safe_load(plain)


def _vault_passwords(converged) -> dict[str, str]:
    return _vault(converged)["vault_mariadb_passwords"]
