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
            "-e", "vault_mariadb_passwords={} vault_grafana_admin_password=x",
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
        "prometheus-node-exporter.service.d/casatwin.conf",
    },
    "optiplex": {
        "kafka.service", "spark-master.service", "mariadb.service.d/casatwin.conf",
        "mongod.service.d/casatwin.conf", "prometheus-node-exporter.service.d/casatwin.conf",
    },
    "prodesk": {
        "casatwin-dispatcher.service", "casatwin-processor.service", "spark-worker.service",
        "prometheus-node-exporter.service.d/casatwin.conf",
    },
}  # fmt: skip
# Executables that the roles put on the nodes (the JVM of the java role, the virtualenvs of
# Spark and CasaTwin, the spark role's wait script, the kiosk's Debian package): absent
# here, so the one complaint systemd-analyze may make of a unit is that one of these is not
# executable.
INSTALLED_ON_THE_NODES = (
    "/usr/lib/jvm/", "/opt/spark/lib/", "/opt/casatwin/venv/bin/",
    "/usr/local/libexec/spark-wait-for-own-address", "/usr/bin/cage",
)  # fmt: skip
NOT_EXECUTABLE = re.compile(
    r"^(?P<unit>\S+): Command (?P<path>\S+) is not executable: No such file or directory$"
)
# The Debian (or vendor) packages' units our drop-ins extend, as stubs: what is checked is
# the drop-in (the packages' own units are theirs).
PACKAGED_UNITS = ("mariadb", "mongod", "grafana-server", "prometheus", "prometheus-node-exporter")


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
    assert props["advertised.listeners"] == "PLAINTEXT://optiplex:9092"


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
