"""The appliance without containers: lint, syntax, argument specs, the memory plan's preflight."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from casatwin.appliance import role_plugin
from tests.appliance import ansible
from tests.appliance.ansible import BIN, REPO, pyspark_version

pytestmark = pytest.mark.appliance

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())

# Everything inventory/local places on its one node, production engines, every service on:
# the floors (MB) of the memory plan's table, written out here so that a component the
# plan leaves out (or counts twice) changes the sums below.
ALL_IN_ONE_FLOORS = {
    "kafka": 768, "mongod": 512, "mariadb": 512, "spark_master": 384, "spark_worker": 1024,
    "processor": 768, "simulator": 256, "gateway": 128, "gateway_fake_api": 64,
    "dispatcher": 128, "dashboard": 256, "prometheus": 256, "grafana": 128,
    "node_exporter": 32, "kiosk": 512,
}  # fmt: skip
CASATWIN_COMPONENTS = {
    "processor", "simulator", "gateway", "gateway_fake_api", "dispatcher", "dashboard",
}  # fmt: skip
RESERVED_MB = 768
# The preflight's failure message (the [ERROR] line; the YAML copy may double the quote).
PREFLIGHT = re.compile(
    r"(?P<node>\S+): the services placed on this node need at least (?P<needed>\d+) MB "
    r"\((?P<floors>\d+) MB of budgets'+ floors \+ (?P<reserved>\d+) MB for the OS\) but it has "
    r"(?P<total>\d+) MB: (?P<overflow>\d+) MB too many\. Floors in MB: (?P<budgets>\{[^}]*\})"
)
# A component's line in the printed plan (the debug task's YAML list of lines).
PLAN_LINE = re.compile(r"^\s*- '  (?P<name>[a-z_]+) +(?P<mb>-?\d+) MB'$", re.M)


def printed_plan(output: str) -> dict[str, int]:
    """The budgets of the plan the base play printed (one node's run)."""
    return {m["name"]: int(m["mb"]) for m in PLAN_LINE.finditer(output)}


def all_in_one_plan(memtotal_mb: int, log: Path) -> ansible.Run:
    """The base play's memory plan for inventory/local with the production engines."""
    return ansible.playbook(
        [
            "-i", "inventory/local", "--tags", "memory_plan",
            "-e", f"memory_plan_memtotal_mb={memtotal_mb}", "-e", "mongodb_engine=mongodb",
            "-e", f"ansible_python_interpreter={BIN / 'python'}",
            "-e", "vault_mariadb_passwords={} vault_kafka_passwords={}",
            "-e", "vault_grafana_admin_password=x",
        ],
        log, timeout_s=180, playbook="playbooks/base.yml",
    )  # fmt: skip


def test_ansible_lint_production_profile():
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--nocolor"],
        cwd=REPO, env=ansible.environment(), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.parametrize("inventory", ["garage", "local"])
def test_syntax_check(inventory, tmp_path):
    run = ansible.playbook(
        ["-i", f"inventory/{inventory}", "--syntax-check"], tmp_path / "syntax.log", timeout_s=120
    )
    assert run.returncode == 0, run.tail()


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    """Every default is declared in meta/argument_specs.yml, and every declared option that
    has a default in the spec has it in defaults/main.yml (what prometheus-community checks)."""
    root = REPO / "roles" / role
    specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options", {})
    defaults_file = root / "defaults/main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    assert set(defaults or {}) <= set(options), set(defaults) - set(options)
    for name, option in options.items():
        assert name.startswith(f"{role}_"), f"{role}: {name} is not prefixed with {role}_"
        assert option.get("description"), f"{role}: {name} has no description"
        assert name in (defaults or {}), f"{role}: {name} is declared but has no default"


def test_plan_that_does_not_fit_fails_in_preflight_naming_node_and_numbers(tmp_path):
    """Everything on one 4 GB node, production engines: the base play stops at preflight,
    naming the node, what its services need and by how much they overflow it."""
    run = all_in_one_plan(4096, tmp_path / "preflight.log")
    assert run.returncode != 0, run.tail()
    found = PREFLIGHT.search(" ".join(run.output.split()))
    assert found, run.tail()
    floors = sum(ALL_IN_ONE_FLOORS.values())
    needed = floors + RESERVED_MB
    assert (needed, needed - 4096) == (6496, 2400)  # the numbers README.md quotes
    assert found["node"] == "localhost"
    assert json.loads(found["budgets"]) == ALL_IN_ONE_FLOORS
    assert int(found["floors"]) == floors
    assert int(found["reserved"]) == RESERVED_MB
    assert int(found["needed"]) == needed
    assert int(found["total"]) == 4096
    assert int(found["overflow"]) == needed - 4096
    assert "memory plan of localhost: 4096 MB total" in run.output
    assert printed_plan(run.output) == ALL_IN_ONE_FLOORS  # no spare: every budget at its floor
    assert f"the floors need {floors} MB + {RESERVED_MB} MB for the OS" in " ".join(
        run.output.split()
    )


def test_plan_for_8gb_all_in_one_fits(tmp_path):
    """The design's promise: the whole appliance (production engines) fits one 8 GB node,
    the CasaTwin services included (inventory/local switches none of them)."""
    run = all_in_one_plan(7842, tmp_path / "plan.log")
    assert run.returncode == 0, run.tail()
    assert "memory plan of localhost: 7842 MB total" in run.output
    assert "DOES NOT FIT" not in run.output
    budgets = printed_plan(run.output)
    assert set(budgets) >= CASATWIN_COMPONENTS, budgets
    assert set(budgets) == set(ALL_IN_ONE_FLOORS), budgets
    assert all(budgets[c] >= floor for c, floor in ALL_IN_ONE_FLOORS.items()), budgets
    assert sum(budgets.values()) + RESERVED_MB <= 7842


def test_every_inventory_sees_the_one_services_enabled_default():
    """One map of switched-on services: the memory plan's default, which the casatwin role's
    default of casatwin_services_enabled is, names every service of the role, all on."""
    roles = REPO / "roles"
    plan_defaults = yaml.safe_load((roles / "memory_plan/defaults/main.yml").read_text())
    casatwin_defaults = yaml.safe_load((roles / "casatwin/defaults/main.yml").read_text())
    default = plan_defaults["memory_plan_services_enabled"]
    assert default == dict.fromkeys(casatwin_defaults["casatwin_services"], True)
    assert casatwin_defaults["casatwin_services_enabled"] == "{{ memory_plan_services_enabled }}"
    local = yaml.safe_load((REPO / "inventory/local/group_vars/all/main.yml").read_text())
    assert "casatwin_services_enabled" not in local  # the plans above run on the default


# -- what the roles template, rendered and checked here -------------------------------------
# The converge test runs MongoDB's stand-in (nx-27017) without Grafana or the kiosk: the
# drop-ins of the packaged servers (MariaDB, MongoDB, Grafana, Prometheus, node_exporter),
# Apache Kafka's unit and configuration, Spark's and the kiosk's units are rendered here
# too, with the garage inventory as it is and its production engines, and checked.

NODES = ("lenovo", "optiplex", "prodesk")
UNITS = Path("etc/systemd/system")
# What the garage inventory gets rendered, node by node (the production engines).
GARAGE_FILES = {
    "lenovo": {
        "casatwin-dashboard.service", "casatwin-gateway-fake-api.service",
        "casatwin-gateway.service", "casatwin-simulator.service", "casatwin-kiosk.service",
        "grafana-server.service.d/casatwin.conf", "prometheus.service.d/casatwin.conf",
        "prometheus-node-exporter.service.d/casatwin.conf", "nftables.service.d/casatwin.conf",
    },
    "optiplex": {
        "kafka.service", "spark-master.service", "mariadb.service.d/casatwin.conf",
        "mongod.service.d/casatwin.conf", "prometheus-node-exporter.service.d/casatwin.conf",
        "nftables.service.d/casatwin.conf",
    },
    "prodesk": {
        "casatwin-dispatcher.service", "casatwin-processor.service", "spark-worker.service",
        "prometheus-node-exporter.service.d/casatwin.conf", "nftables.service.d/casatwin.conf",
    },
}  # fmt: skip
# Executables that the roles put on the nodes (the JVM of the java role, the virtualenvs of
# Spark and CasaTwin, the spark role's wait script, the kiosk's Debian package): absent
# here, so the one complaint systemd-analyze may make of a unit is that one of these is not
# executable.
INSTALLED_ON_THE_NODES = (
    "/usr/lib/jvm/", "/opt/spark/lib/", "/opt/casatwin/venv/bin/",
    "/usr/local/libexec/spark-wait-for-own-address", "/usr/bin/cage", "/usr/sbin/nft",
)  # fmt: skip
NOT_EXECUTABLE = re.compile(
    r"^(?P<unit>\S+): Command (?P<path>\S+) is not executable: No such file or directory$"
)
# The Debian (or vendor) packages' units our drop-ins extend, as stubs: what is checked is
# the drop-in (the packages' own units are theirs).
PACKAGED_UNITS = (
    "mariadb", "mongod", "grafana-server", "prometheus", "prometheus-node-exporter", "nftables",
)  # fmt: skip
# The nodes' addresses the firewall's rules name (on the nodes, each resolves the others').
NODE_ADDRESSES = {"lenovo": ["10.0.0.10"], "optiplex": ["10.0.0.11", "fd00::11"],
                  "prodesk": ["10.0.0.12"]}  # fmt: skip
# The Kafka passwords of the rendering (no vault there): admin's and the brokers'.
RENDER_KAFKA_PASSWORDS = {"admin": "a" * 32, "controller": "c" * 32}
# Spark's shared secret and the MongoDB users' passwords of the rendering.
RENDER_SPARK_SECRET = "s" * 40
RENDER_MONGODB_PASSWORDS = {u: f"{u}-{'m' * 32}" for u in ansible.MONGODB_USERS}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """tests/appliance/render.yml run on the garage inventory: <dir>/<node>/<path>."""
    work = tmp_path_factory.mktemp("render")
    defaults = {}
    for path in sorted((REPO / "roles").glob("*/defaults/main.yml")):
        role_defaults = yaml.safe_load(path.read_text()) or {}
        assert not set(role_defaults) & set(defaults), path  # prefixed: no role shadows another
        defaults.update(role_defaults)
    # Role defaults as the group vars of an extra inventory source: above role defaults,
    # below the inventory's group_vars, as in a real run.
    (work / "defaults.yml").write_text(yaml.safe_dump({"all": {"vars": defaults}}))
    out = work / "nodes"
    run = ansible.playbook(
        [
            "-i", "inventory/garage", "-i", str(work / "defaults.yml"),
            "-e", f"render_dir={out}", "-e", "memory_plan_memtotal_mb=7842",
            "-e", f"ansible_python_interpreter={BIN / 'python'}",
            "-e", '{"vault_mariadb_passwords": {}, "vault_grafana_admin_password": "x",'
                  ' "vault_tailscale_authkey": "x"}',
            "-e", json.dumps({"vault_kafka_passwords": RENDER_KAFKA_PASSWORDS}),
            "-e", json.dumps({"vault_spark_auth_secret": RENDER_SPARK_SECRET,
                              "vault_mongodb_passwords": RENDER_MONGODB_PASSWORDS}),
            "-e", json.dumps({"firewall_node_addresses": NODE_ADDRESSES}),
        ],
        work / "render.log", timeout_s=300, playbook="tests/appliance/render.yml",
    )  # fmt: skip
    assert run.returncode == 0, run.tail()
    return out


def systemd_verify(unit_dir: Path, units: list[str], stubs: Path) -> list[str]:
    """What ``systemd-analyze verify`` says of these units (drop-ins included) that it
    should not: every line but a role-installed executable's absence."""
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:{stubs}:/usr/lib/systemd/system")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        cwd=unit_dir, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = (result.stdout + result.stderr).splitlines()
    problems = []
    for line in lines:
        missing = NOT_EXECUTABLE.match(line)
        if missing and missing["path"].startswith(INSTALLED_ON_THE_NODES):
            continue  # a failure, and the only one allowed: the nodes have it
        problems.append(line)
    if result.returncode != 0 and not lines:
        problems.append(f"systemd-analyze verify exited {result.returncode} without a word")
    return problems


@pytest.fixture(scope="module")
def package_stubs(tmp_path_factory) -> Path:
    stubs = tmp_path_factory.mktemp("stubs")
    for name in PACKAGED_UNITS:
        (stubs / f"{name}.service").write_text(
            f"[Unit]\nDescription=stand-in for the package's {name}.service\n"
            "[Service]\nExecStart=/bin/true\n"
        )
    return stubs


def _units_to_verify(unit_dir: Path) -> list[str]:
    """Our units, and the packaged units our drop-ins extend (checked with the drop-ins)."""
    ours = sorted(p.name for p in unit_dir.glob("*.service"))
    extended = sorted(p.name.removesuffix(".d") for p in unit_dir.glob("*.service.d"))
    return ours + extended


requires_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_garage_renders_each_nodes_units_and_drop_ins(rendered):
    for node, expected in GARAGE_FILES.items():
        unit_dir = rendered / node / UNITS
        found = {str(p.relative_to(unit_dir)) for p in unit_dir.rglob("*") if p.is_file()}
        assert found == expected, (node, found ^ expected)


@requires_systemd_analyze
@pytest.mark.parametrize("node", NODES)
def test_rendered_units_pass_systemd_analyze_verify(rendered, package_stubs, node):
    unit_dir = rendered / node / UNITS
    problems = systemd_verify(unit_dir, _units_to_verify(unit_dir), package_stubs)
    assert problems == [], "\n".join(problems)


@requires_systemd_analyze
def test_the_verify_check_catches_a_wrong_unit_and_a_wrong_drop_in(
    rendered, package_stubs, tmp_path
):
    """systemd-analyze verify exits 0 on an unknown key: the check reads what it says."""
    unit_dir = tmp_path / "units"
    shutil.copytree(rendered / "optiplex" / UNITS, unit_dir)
    kafka = unit_dir / "kafka.service"
    kafka.write_text(kafka.read_text().replace("MemoryMax=", "MemoryMaximum="))
    drop_in = unit_dir / "mariadb.service.d/casatwin.conf"
    drop_in.write_text(drop_in.read_text().replace("LimitNOFILE=", "LimitNoFile="))
    problems = systemd_verify(unit_dir, _units_to_verify(unit_dir), package_stubs)
    assert any("MemoryMaximum" in p for p in problems), problems
    assert any("LimitNoFile" in p for p in problems), problems


@pytest.mark.parametrize("node", NODES)
def test_every_unit_and_drop_in_has_a_memory_max_from_the_plan(rendered, node):
    """README: every unit gets MemoryMax= from its budget (drop-ins for the packaged ones)."""
    unit_dir = rendered / node / UNITS
    files = [*unit_dir.glob("*.service"), *unit_dir.glob("*.service.d/*.conf")]
    assert files
    # nftables.service loads the rules and exits (a oneshot): nothing runs to budget.
    files = [f for f in files if f.parent.name != "nftables.service.d"]
    for path in files:
        found = re.findall(r"^MemoryMax=(\d+)M$", path.read_text(), re.M)
        assert len(found) == 1 and int(found[0]) > 0, (path, found)


def test_kafka_logs_are_outside_its_log_dirs_and_the_quorum_names_this_node(rendered):
    root = rendered / "optiplex"
    props = dict(
        line.split("=", 1)
        for line in (root / "etc/kafka/server.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    unit = (root / UNITS / "kafka.service").read_text()
    log_dir = re.search(r"^ExecStart=.* -Dkafka\.logs\.dir=(\S+) ", unit, re.M)[1]
    for data_dir in props["log.dirs"].split(","):
        assert not f"{log_dir}/".startswith(f"{data_dir.rstrip('/')}/"), (log_dir, data_dir)
    assert log_dir in re.search(r"^ReadWritePaths=(.*)$", unit, re.M)[1].split()
    voters = dict(v.split("@") for v in props["controller.quorum.voters"].split(","))
    assert voters[props["node.id"]] == "optiplex:9093", voters
    assert props["process.roles"] == "broker,controller"
    assert props["advertised.listeners"] == "BROKER://optiplex:9092"


def test_kafka_asks_every_client_who_it_is_and_authorizes_each_request(rendered):
    """Both listeners SASL (SCRAM for clients, PLAIN between controllers), the vault's
    passwords in the JAAS lines, StandardAuthorizer with admin and the brokers as super users."""
    props = dict(
        line.split("=", 1)
        for line in (rendered / "optiplex/etc/kafka/server.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    protocols = dict(pair.split(":") for pair in props["listener.security.protocol.map"].split(","))
    listeners = [entry.split("://")[0] for entry in props["listeners"].split(",")]
    assert {protocols[name] for name in listeners} == {"SASL_PLAINTEXT"}
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    admin, controller = RENDER_KAFKA_PASSWORDS["admin"], RENDER_KAFKA_PASSWORDS["controller"]
    assert (
        f'username="admin" password="{admin}";'
        in props["listener.name.broker.scram-sha-512.sasl.jaas.config"]
    )
    assert (
        f'user_controller="{controller}";'
        in props["listener.name.controller.plain.sasl.jaas.config"]
    )
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["super.users"] == "User:admin;User:controller"


def test_kafka_unit_runs_the_broker_on_the_jvm_with_the_plans_heap(rendered):
    """No bin/*.sh (only the Apache archive has them): kafka.Kafka on the java role's JVM,
    every jar of the installed archive's libs/ on the class path, Xms = Xmx = the plan's
    heap (1536 MB on the garage's broker node, README), log4j2 configured by the role."""
    unit = (rendered / "optiplex" / UNITS / "kafka.service").read_text()
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M)[1])
    assert argv[0] == "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", argv
    assert argv[-4:] == ["-cp", "/opt/kafka/libs/*", "kafka.Kafka", "/etc/kafka/server.properties"]
    assert {"-Xms1536m", "-Xmx1536m", "-Dlog4j2.configurationFile=/etc/kafka/log4j2.yaml"} <= set(
        argv
    ), argv
    assert not any("/bin/kafka-" in a for a in argv), argv


def _properties(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_kafka_is_kraft_only_and_logs_with_log4j2(rendered):
    """Kafka 4: no ZooKeeper setting, the internal topics replicated as the data (share
    groups' state included), and logging configured for log4j2 (YAML), not log4j 1."""
    root = rendered / "optiplex"
    props = _properties(root / "etc/kafka/server.properties")
    assert not [k for k in props if k.startswith("zookeeper.") or k == "broker.id"], props
    assert props["share.coordinator.state.topic.replication.factor"] == "1"  # one broker node
    assert props["min.insync.replicas"] == "1"
    broker = yaml.safe_load((root / "etc/kafka/log4j2.yaml").read_text())["Configuration"]
    files = {a["name"]: a["fileName"] for a in broker["Appenders"]["RollingFile"]}
    assert files["server"] == "${sys:kafka.logs.dir}/server.log", files
    assert {r["ref"] for r in broker["Loggers"]["Root"]["AppenderRef"]} == {"server", "journal"}
    tools = yaml.safe_load((root / "etc/kafka/tools-log4j2.yaml").read_text())["Configuration"]
    assert tools["Appenders"]["Console"]["target"] == "SYSTEM_ERR"  # stdout: the answers only
    assert not list((root / "etc/kafka").glob("*log4j*.properties"))


def test_kafka_role_runs_the_devstacks_kafka_version():
    """One Kafka version: the role's (the Apache archive) is the devstack's (Maven Central)."""
    defaults = yaml.safe_load((REPO / "roles/kafka/defaults/main.yml").read_text())
    pom = (REPO / "services/casatwin/devstack/kafka-broker.pom.xml").read_text()
    assert re.search(r"<kafka\.version>([^<]+)<", pom)[1] == defaults["kafka_version"]
    assert f"<artifactId>kafka_{defaults['kafka_scala_version']}</artifactId>" in pom


def test_spark_connector_is_the_pyspark_version_and_the_devstacks_jars():
    """The spark role's pyspark and Kafka connector are the processor's (pyproject.toml) and
    the devstack's (spark-kafka.pom.xml: the connector at spark.version, the same artifacts);
    the jars `make setup` resolved, where present, are the role's, byte for byte."""
    import hashlib

    defaults = yaml.safe_load((REPO / "roles/spark/defaults/main.yml").read_text())
    version = pyspark_version()
    assert defaults["spark_pyspark_package"] == f"pyspark=={version}"
    connector = {j["artifact"]: j for j in defaults["spark_kafka_connector"]}
    pom = (REPO / "services/casatwin/devstack/spark-kafka.pom.xml").read_text()
    assert re.search(r"<spark\.version>([^<]+)<", pom)[1] == version
    included = re.search(r"<includeArtifactIds>([^<]+)<", pom)[1].split(",")
    assert set(connector) == set(included)
    for artifact in ("spark-sql-kafka-0-10_2.13", "spark-token-provider-kafka-0-10_2.13"):
        assert connector[artifact]["version"] == version
    for jar in connector.values():
        assert re.fullmatch(r"[0-9a-f]{64}", jar["sha256"]), jar
    from casatwin.config import load

    jars_dir = load().general.jars_dir
    resolved = (jars_dir if jars_dir.is_absolute() else REPO / jars_dir) / "spark-kafka"
    if not resolved.is_dir():
        pytest.skip(f"{resolved} not resolved (make setup)")
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in resolved.glob("*.jar")}
    pinned = {f"{j['artifact']}-{j['version']}.jar": j["sha256"] for j in connector.values()}
    assert found == pinned


def test_the_processor_reads_the_connector_where_the_spark_role_puts_it(rendered):
    spark = yaml.safe_load((REPO / "roles/spark/defaults/main.yml").read_text())
    env = (rendered / "prodesk/etc/casatwin/processor.env").read_text()
    assert f"CASATWIN_GENERAL_JARS_DIR={spark['spark_jars_dir']}\n" in env
    spark_vars = yaml.safe_load((REPO / "roles/spark/vars/main.yml").read_text())
    assert spark_vars["_spark_kafka_dir"] == "{{ spark_jars_dir }}/spark-kafka"


@pytest.mark.skipif(not Path("/usr/sbin/mariadbd").exists(), reason="no mariadbd here")
def test_mariadb_options_pass_the_servers_own_check(rendered, tmp_path):
    """The role's template validation (mariadbd parses the file), run on the rendered file;
    and it refuses an unknown option and a value the server cannot take."""
    validate = yaml.safe_load((REPO / "roles/mariadb/vars/main.yml").read_text())[
        "_mariadb_validate_cnf"
    ]
    cnf = rendered / "optiplex/etc/mysql/mariadb.conf.d/60-casatwin.cnf"

    def check(path: Path) -> subprocess.CompletedProcess:
        argv = shlex.split(validate.replace("%s", str(path)))  # as the template module does
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    result = check(cnf)
    assert result.returncode == 0, result.stdout + result.stderr
    for wrong in ("innodb_bufer_pool_size = 1G", "innodb_buffer_pool_size = lots"):
        path = tmp_path / "wrong.cnf"
        path.write_text(cnf.read_text() + wrong + "\n")
        assert check(path).returncode != 0, wrong


def test_mongod_conf_caps_the_cache_from_the_plan(rendered):
    conf = yaml.safe_load((rendered / "optiplex/etc/mongod.conf").read_text())
    assert conf["storage"]["wiredTiger"]["engineConfig"]["cacheSizeGB"] == 0.75  # README's plan
    assert conf["net"]["bindIp"] == "0.0.0.0"


@pytest.mark.parametrize("node", NODES)
def test_each_services_state_directory_is_casatwin_state_dir(rendered, node):
    """StateDirectory= (relative to /var/lib, made by systemd for the service's user) is
    the directory the service works in and is told to keep its data in."""
    for path in (rendered / node / UNITS).glob("casatwin-*.service"):
        unit = path.read_text()
        if "StateDirectory=" not in unit:
            assert path.name == "casatwin-kiosk.service"
            continue
        state = "/var/lib/" + re.search(r"^StateDirectory=(\S+)$", unit, re.M)[1]
        assert f"WorkingDirectory={state}\n" in unit, path
        assert f"Environment=CASATWIN_GENERAL_DATA_DIR={state}\n" in unit, path
        assert state.startswith("/var/lib/casatwin/"), path  # casatwin_state_dir's default


@pytest.mark.parametrize("node", NODES)
def test_each_service_runs_as_its_own_user(rendered, node):
    """Issue 15: User= and Group= are casatwin-<service>, a different one for each service."""
    users = {}
    for path in (rendered / node / UNITS).glob("casatwin-*.service"):
        if path.name == "casatwin-kiosk.service":
            continue
        unit = path.read_text()
        service = path.name.removeprefix("casatwin-").removesuffix(".service")
        assert f"\nUser=casatwin-{service}\n" in unit, path
        assert f"\nGroup=casatwin-{service}\n" in unit, path
        users[service] = re.search(r"^User=(\S+)$", unit, re.M)[1]
    assert len(set(users.values())) == len(users), users  # optiplex runs none


def test_env_files_are_roots_and_secrets_their_services_only():
    """An env file (database password) is root's alone, 0600 (systemd reads it as root); a
    secret file is its service's user's alone, 0600; the shared settings hold no secret."""
    tasks = yaml.safe_load((REPO / "roles/casatwin/tasks/configure.yml").read_text())
    flat = [t for task in tasks for t in task.get("block", [task])]
    modules = ("ansible.builtin.template", "ansible.builtin.copy")
    by_dest = {t[m]["dest"]: t[m] for t in flat for m in modules if m in t}
    env = by_dest["{{ casatwin_config_dir }}/{{ item.key }}.env"]
    assert (env["owner"], env["group"], env["mode"]) == ("root", "root", "0600")
    secret = by_dest["{{ item.file }}"]
    assert secret["owner"] == secret["group"] == "{{ casatwin_user_prefix }}{{ item.service }}"
    assert secret["mode"] == "0600"
    shared = by_dest["{{ casatwin_config_dir }}/casatwin.env"]
    assert shared["mode"] == "0644"
    settings = yaml.safe_load((REPO / "roles/casatwin/defaults/main.yml").read_text())
    assert not [k for k in settings["casatwin_settings"] if re.search("PASSWORD|KEY|TOKEN", k)]


@pytest.mark.parametrize("node", NODES)
def test_firewall_ruleset_drops_by_default_and_names_the_peers(rendered, node):
    """The rendered ruleset: input dropped unless accepted, SSH open, and the MariaDB port
    open on the broker node to the services' nodes (edge, compute) by address, nowhere else."""
    ruleset = (rendered / node / "etc/nftables.conf").read_text()
    assert "type filter hook input priority filter; policy drop;" in ruleset
    assert "\t\ttcp dport 22 accept\n" in ruleset and 'iif "lo" accept' in ruleset
    mariadb = re.findall(r"^\s*(.*) tcp dport 3306 accept$", ruleset, re.M)
    expected = ["ip saddr { 10.0.0.10, 10.0.0.12 }"] if node == "optiplex" else []
    assert mariadb == expected, (node, mariadb)
    assert "tailscale0" not in ruleset  # per-port rules: the tailnet gets no blanket accept


@pytest.mark.skipif(
    shutil.which("nft") is None or os.geteuid() != 0, reason="nft -c needs nft and root"
)
@pytest.mark.parametrize("node", NODES)
def test_firewall_ruleset_passes_nfts_own_check(rendered, node, tmp_path):
    """The role's template validation (nft -c: parsed and checked by the kernel, nothing
    applied) on the rendered ruleset; and it refuses a wrong one."""
    validate = yaml.safe_load((REPO / "roles/firewall/vars/main.yml").read_text())[
        "_firewall_validate"
    ]
    ruleset = rendered / node / "etc/nftables.conf"
    result = subprocess.run(
        shlex.split(validate.replace("%s", str(ruleset))), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wrong = tmp_path / "wrong.conf"
    wrong.write_text(ruleset.read_text().replace("tcp dport 22 accept", "tcp dport 22 acept"))
    refused = subprocess.run(["nft", "-c", "-f", str(wrong)], capture_output=True, check=False)
    assert refused.returncode != 0


# -- issue 15: Spark's shared secret, MongoDB's users, MariaDB's accounts by address --------


def test_spark_daemons_authenticate_with_the_secret_from_a_file_never_a_command_line(rendered):
    """Master and worker read spark.authenticate and the vault's secret from the role's
    properties file (--properties-file); the secret is in no unit (ExecStart is in `ps`)."""
    properties = "/etc/spark/spark-auth.properties"
    for node, unit in (("optiplex", "spark-master.service"), ("prodesk", "spark-worker.service")):
        text = (rendered / node / UNITS / unit).read_text()
        assert f" --properties-file {properties}" in re.search(r"^ExecStart=.*$", text, re.M)[0]
        assert RENDER_SPARK_SECRET not in text and "spark.authenticate" not in text
        conf = dict(
            line.split(" ", 1)
            for line in (rendered / node / properties.lstrip("/")).read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert conf == {
            "spark.authenticate": "true",
            "spark.authenticate.secret": RENDER_SPARK_SECRET,
        }
    spec = yaml.safe_load((REPO / "roles/spark/tasks/configure.yml").read_text())
    task = next(
        t
        for t in spec
        if t.get("ansible.builtin.template", {}).get("src") == "spark-auth.properties.j2"
    )
    assert (
        task["ansible.builtin.template"]["group"],
        task["ansible.builtin.template"]["mode"],
    ) == ("spark", "0640")
    assert task["no_log"] is True  # --diff would show the secret


def test_the_processors_driver_gets_the_secret_as_a_properties_file_of_its_own(rendered):
    """The processor's env names its secret file (CASATWIN_PROCESSOR_SPARK_AUTH_FILE, which
    session.submit_args hands to spark-submit) and holds no secret itself; the file is
    written from the vault as a properties file (the casatwin role's secrets)."""
    env = (rendered / "prodesk/etc/casatwin/processor.env").read_text()
    assert "CASATWIN_PROCESSOR_SPARK_AUTH_FILE=/etc/casatwin/secrets/spark-auth.properties\n" in env
    assert RENDER_SPARK_SECRET not in env and "--properties-file" not in env
    secrets = yaml.safe_load((REPO / "roles/casatwin/vars/main.yml").read_text())[
        "_casatwin_secrets"
    ]
    spark = next(s for s in secrets if s["setting"] == "CASATWIN_PROCESSOR_SPARK_AUTH_FILE")
    assert spark["service"] == "processor" and spark["var"] == "casatwin_spark_auth_secret"
    assert spark["prefix"] == "spark.authenticate true\nspark.authenticate.secret "


def test_mongodb_asks_every_client_to_log_in(rendered):
    conf = yaml.safe_load((rendered / "optiplex/etc/mongod.conf").read_text())
    assert conf["security"] == {"authorization": "enabled"}


@pytest.mark.parametrize("service", ["processor", "dispatcher", "dashboard"])
def test_each_read_model_service_logs_in_to_mongodb_as_itself(rendered, service):
    """Production engine: the service's own env file (root's, 0600) carries its user and
    password in CASATWIN_MONGO_URL; the shared settings carry no credentials."""
    node = "prodesk" if service in ("processor", "dispatcher") else "lenovo"
    env = _properties(rendered / node / f"etc/casatwin/{service}.env")
    password = RENDER_MONGODB_PASSWORDS[service]
    assert env["CASATWIN_MONGO_URL"] == (
        f"mongodb://casatwin_{service}:{password}@optiplex:27017/?authSource=admin"
    )
    others = {u: p for u, p in RENDER_MONGODB_PASSWORDS.items() if u != service}
    assert not [u for u, p in others.items() if p in str(env)], service
    shared = yaml.safe_load((REPO / "roles/casatwin/defaults/main.yml").read_text())
    assert "@" not in shared["casatwin_settings"]["CASATWIN_MONGO_URL"]


def test_the_services_without_the_read_model_get_no_mongodb_user(rendered):
    for node, service in (("lenovo", "simulator"), ("lenovo", "gateway")):
        env = (rendered / node / f"etc/casatwin/{service}.env").read_text()
        assert "CASATWIN_MONGO_URL" not in env, service


def test_mongodb_users_are_the_services_that_use_the_read_model():
    """The mongodb role's users and the casatwin role's read-model services are one list;
    each role holds only its collections' actions (the dashboard only reads)."""
    defaults = yaml.safe_load((REPO / "roles/mongodb/defaults/main.yml").read_text())
    privileges = defaults["mongodb_service_privileges"]
    casatwin = yaml.safe_load((REPO / "roles/casatwin/vars/main.yml").read_text())
    assert sorted(privileges) == sorted(casatwin["_casatwin_mongodb_users"])
    assert set(ansible.MONGODB_USERS) == {defaults["mongodb_admin_user"], *privileges}
    assert all(actions == ["find"] for actions in privileges["dashboard"].values())
    access = role_plugin("mongodb", "filter_plugins/mongodb_access.py")
    plan = access.mongodb_access(privileges, "casatwin", "admin", {"dashboard": "p"}, "27017")
    dashboard = next(r for r in plan["roles"] if r["role"] == "casatwin_dashboard")
    assert {p["resource"]["collection"] for p in dashboard["privileges"]} == {
        "infractions", "congestion", "dispatch_events",
    }  # fmt: skip
    assert {p["resource"]["db"] for r in plan["roles"] for p in r["privileges"]} == {"casatwin"}
    user = next(u for u in plan["users"] if u["user"] == "casatwin_dashboard")
    assert user == {"user": "casatwin_dashboard", "password": "p",
                    "roles": [{"role": "casatwin_dashboard", "db": "admin"}]}  # fmt: skip


# -- issue 15: HTTPS for the dashboard, the appliance's CA ---------------------------------


def test_dashboard_serves_https_with_secure_cookies_and_the_kiosk_follows(rendered):
    """On the garage the dashboard gets its certificate and key (the casatwin role's files)
    and Secure cookies; no other service gets them; the kiosk opens the https URL."""
    defaults = yaml.safe_load((REPO / "roles/casatwin/defaults/main.yml").read_text())
    assert defaults["casatwin_dashboard_tls"] is True
    env = _properties(rendered / "lenovo/etc/casatwin/dashboard.env")
    assert env["CASATWIN_DASHBOARD_TLS_CERT_FILE"] == "/etc/casatwin/tls/dashboard.crt"
    assert env["CASATWIN_DASHBOARD_TLS_KEY_FILE"] == "/etc/casatwin/secrets/dashboard-tls.key"
    assert env["CASATWIN_DASHBOARD_COOKIE_SECURE"] == "true"
    for path in rendered.glob("*/etc/casatwin/*.env"):
        if path.name != "dashboard.env":
            assert "CASATWIN_DASHBOARD_TLS" not in path.read_text(), path
    unit = (rendered / "lenovo" / UNITS / "casatwin-kiosk.service").read_text()
    assert re.search(r"^ExecStart=.* https://lenovo:8080/kiosk$", unit, re.M), unit


def test_the_kiosk_and_the_services_read_the_pki_roles_ca():
    """The kiosk's and the casatwin role's fallbacks are the pki role's and casatwin's own
    defaults (they run in plays where those roles' defaults may not be loaded)."""
    roles = REPO / "roles"
    pki = yaml.safe_load((roles / "pki/defaults/main.yml").read_text())
    kiosk = yaml.safe_load((roles / "kiosk/defaults/main.yml").read_text())
    casatwin = yaml.safe_load((roles / "casatwin/defaults/main.yml").read_text())
    assert kiosk["kiosk_ca_file"] == (
        f"{{{{ pki_trust_file | default('{pki['pki_trust_file']}') }}}}"
    )
    fallback = str(casatwin["casatwin_dashboard_tls"]).lower()
    assert kiosk["kiosk_dashboard_tls"] == f"{{{{ casatwin_dashboard_tls | default({fallback}) }}}}"
    assert casatwin["casatwin_tls_ca_cert_file"] == "{{ pki_ca_cert_file | default('') }}"
    assert casatwin["casatwin_tls_ca_key_file"] == "{{ pki_ca_key_file | default('') }}"
    # The services' and the kiosk's plays run the pki role first (its defaults, its CA).
    for play in ("services", "kiosk"):
        roles_of = [
            r["role"] for p in yaml.safe_load((REPO / f"playbooks/{play}.yml").read_text())
            for r in p.get("roles", [])
        ]  # fmt: skip
        assert roles_of.index("pki") < roles_of.index("casatwin" if play == "services" else play)


def test_the_cas_key_stays_out_of_git():
    """pki_ca_dir's default, inventory/<name>/pki/, is ignored by git (the CA's key)."""
    pki = yaml.safe_load((REPO / "roles/pki/defaults/main.yml").read_text())
    assert pki["pki_ca_dir"] == "{{ inventory_dir }}/pki"
    assert pki["pki_ca_key_file"] == "{{ pki_ca_dir }}/casatwin-ca.key"
    for inventory in ("garage", "local"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", f"inventory/{inventory}/pki/casatwin-ca.key"],
            cwd=REPO, check=False,
        )  # fmt: skip
        assert ignored.returncode == 0, inventory
