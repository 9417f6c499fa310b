"""The one settings module.

Every setting is an environment variable ``CASATWIN_<SECTION>_<NAME>`` (for example
``CASATWIN_KAFKA_BOOTSTRAP``) with a documented default that works for ``make run``.
Sections are small frozen dataclasses; :class:`Settings` groups them. Services receive
the settings object explicitly: nothing reads the environment behind their back.

``casatwin config`` prints the effective values; ``casatwin config --markdown`` prints
the reference table that ``docs/configuration.md`` carries (a test keeps them in sync).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from casatwin.errors import UserError

PREFIX = "CASATWIN_"


def secret_file(setting_value: str, data_dir: Path, name: str) -> Path:
    """A secret file's path: the setting's, or ``<data_dir>/secrets/<name>`` when empty."""
    return Path(setting_value) if setting_value else data_dir / "secrets" / name


def setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    """A dataclass field carrying its documentation (and whether to hide its value)."""
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass(frozen=True)
class GeneralSettings:
    """Where state lives and how services talk about themselves."""

    data_dir: Path = setting(
        Path(".casatwin"), "Runtime state: server data, checkpoints, logs of `make run`."
    )
    jars_dir: Path = setting(
        Path(".casatwin/jars"),
        "JVM jars that `make setup` resolves from Maven Central: Apache Kafka's broker "
        "(`kafka/`) and Spark's Kafka connector (`spark-kafka/`).",
    )
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR.")
    log_format: str = setting(
        "text", "`text` (one line per event, key=value fields) or `json` (one object per line)."
    )
    node_name: str = setting(
        "", "Name this node advertises (its Tailscale name on the appliance); empty = hostname."
    )


@dataclass(frozen=True)
class KafkaSettings:
    """The message bus: Apache Kafka (KRaft)."""

    bootstrap: str = setting("127.0.0.1:9092", "Bootstrap servers, comma separated host:port.")
    user: str = setting(
        "",
        "Kafka principal (SCRAM user) this process authenticates as; empty: each service "
        "its own (`simulator`, `gateway`, `processor`, `dispatcher`, `dashboard`), `admin` "
        "for the command-line tools. What each may do: docs/security.md.",
    )
    credentials_dir: str = setting(
        "",
        "Directory of the Kafka passwords, a file `<user>.password` per principal; empty: "
        "`<data_dir>/secrets/kafka`. `make run` and the tests generate them; on the appliance "
        "the vault gives each service only its own (mode 0600, the service's user).",
    )
    partitions: int = setting(6, "Partitions of the high-rate topics (telemetry, sensors).")
    session_timeout_ms: int = setting(
        6000, "Consumer group session timeout; short so that groups join in seconds."
    )
    heartbeat_interval_ms: int = setting(1000, "Consumer group heartbeat interval.")
    max_poll_interval_ms: int = setting(
        10000, "Longest pause between polls before a consumer is thought dead."
    )
    linger_ms: int = setting(5, "Producer batching delay; trades a few ms for throughput.")
    message_timeout_ms: int = setting(
        30000,
        "How long the producer keeps retrying a message before reporting it undelivered.",
    )
    queue_max_messages: int = setting(
        200000, "Messages the producer buffers while the broker is away; beyond, new ones fail."
    )
    fetch_wait_max_ms: int = setting(
        10,
        "Longest the broker holds a consumer's fetch when nothing new has arrived: the latency "
        "floor of every consumer (librdkafka's 500 ms default would eat the 200 ms budget).",
    )
    reconnect_backoff_max_ms: int = setting(
        5000, "Longest wait between reconnect attempts (exponential backoff from 100 ms)."
    )
    heap_mb: int = setting(
        768, "Java heap of the Kafka broker that `make run` and the tests start (Xms = Xmx)."
    )
    # Not a setting: :class:`Settings` copies ``general.data_dir`` here, where an empty
    # ``credentials_dir`` points.
    data_dir: Path = field(default=Path(".casatwin"), compare=False, metadata={"internal": True})

    def principal(self) -> str:
        """The user this process authenticates as (tools: ``admin``)."""
        return self.user or "admin"

    def credentials_path(self) -> Path:
        return secret_file(self.credentials_dir, self.data_dir, "kafka")

    def password_file(self, user: str) -> Path:
        return self.credentials_path() / f"{user}.password"


@dataclass(frozen=True)
class MongoSettings:
    """The read model (MongoDB, or the embedded nx-27017 MongoDB-wire server)."""

    url: str = setting("mongodb://127.0.0.1:27017", "MongoDB connection URL.", secret=True)
    database: str = setting("casatwin", "Database of the read model.")


@dataclass(frozen=True)
class MariaDBSettings:
    """The system of record."""

    host: str = setting("127.0.0.1", "MariaDB host.")
    port: int = setting(3306, "MariaDB port.")
    user: str = setting("casatwin", "MariaDB user of the services.")
    password: str = setting(
        "", "MariaDB password (empty for the `make run` instance).", secret=True
    )
    database: str = setting("casatwin", "MariaDB database.")
    tls_ca_file: str = setting(
        "",
        "CA certificate (PEM) that signed MariaDB's: every connection is then TLS, and MariaDB's "
        "certificate must be that CA's and name CASATWIN_MARIADB_HOST. Empty: no TLS (the "
        "`make run` instance, on loopback). The appliance names its own CA.",
    )
    connect_timeout_s: float = setting(5.0, "How long to wait for MariaDB to answer a connection.")
    buffer_pool_mb: int = setting(
        2048,
        "InnoDB buffer pool of the MariaDB that `make run` and `make bench` start: the 10M-driver "
        "registry's hot pages (~1.5 GB) fit, so lookups never wait for the disk. Memory is "
        "only taken as pages are used. Production sizes its own in the Ansible role.",
    )


@dataclass(frozen=True)
class CitySettings:
    """The city pack every service shares."""

    pack: str = setting(
        "casablanca", "A bundled pack name or the path of a pack file built by `casatwin city`."
    )
    # One override per road class (model.ROAD_CLASSES); 0 keeps each segment's own limit.
    limit_motorway_kmh: float = setting(
        0.0, "Speed limit on urban motorway segments, km/h; 0 keeps the pack's (Casablanca: 100)."
    )
    limit_arterial_kmh: float = setting(
        0.0, "Speed limit on arterial segments, km/h; 0 keeps the pack's (Casablanca: 60)."
    )
    limit_street_kmh: float = setting(
        0.0, "Speed limit on ordinary streets, km/h; 0 keeps the pack's (Casablanca: 60)."
    )
    limit_centre_kmh: float = setting(
        0.0, "Speed limit in the historic centre, km/h; 0 keeps the pack's (Casablanca: 40)."
    )


@dataclass(frozen=True)
class SimulatorSettings:
    """The fleet simulator (taxis, police units, intersection sensors)."""

    taxis: int = setting(500, "Taxis simulated (the whole Casablanca fleet is about 13,000).")
    seed: int = setting(42, "Random seed; the same seed gives the same city.")
    telemetry_hz: float = setting(1.0, "Telemetry messages per vehicle per second.")
    step_s: float = setting(0.5, "Simulation time step in seconds.")
    realtime: bool = setting(True, "Run in real time (false: as fast as possible).")
    speeder_share: float = setting(0.03, "Share of taxis that drive over the limit.")
    red_light_runner_share: float = setting(0.01, "Share of taxis that ignore red lights.")
    illegal_parker_share: float = setting(0.01, "Share of taxis that park in no-parking zones.")
    sensor_period_s: float = setting(10.0, "Period of the intersection sensor reports.")
    scenario: str = setting("", "Scenario file to play (empty: free traffic only).")
    stop_after_scenario: bool = setting(
        False,
        "When the scenario's `duration_s` is over: false: the simulator says so and goes on "
        "with normal traffic (the scenario's taxis drive on, law-abiding) until stopped; "
        "true: it stops there, and the whole of `make run` with it.",
    )
    metrics_port: int = setting(9401, "Port of the simulator's /metrics endpoint (0: off).")


@dataclass(frozen=True)
class GatewaySettings:
    """The highway feed gateway: polls the traffic-management API, publishes the readings."""

    api_url: str = setting(
        "http://127.0.0.1:8470/tmdd/detector-data",
        "URL of the traffic-management API's detector data (TMDD XML); the default is the "
        "fake API of `make run`.",
    )
    poll_interval_s: float = setting(10.0, "Seconds between two polls while the API is healthy.")
    request_timeout_s: float = setting(
        5.0, "Longest wait for one whole answer (connect, headers and body) before giving up."
    )
    breaker_failure_threshold: int = setting(
        5, "Failed polls in a row that open the circuit breaker (requests stop)."
    )
    breaker_open_s: float = setting(
        30.0, "How long the open breaker pauses requests before a trial request (half-open)."
    )
    breaker_half_open_probes: int = setting(
        1, "Successful trial polls in a row that close the breaker again."
    )
    backoff_base_s: float = setting(
        0.5, "First retry delay after a transient failure; doubles on each failure (jittered)."
    )
    backoff_max_s: float = setting(30.0, "Longest retry delay after transient failures.")
    max_document_bytes: int = setting(
        1_048_576, "Largest document accepted from the API; bigger ones go to the DLQ."
    )
    max_clock_skew_s: float = setting(
        300.0, "Readings stamped further than this in the future are refused (DLQ)."
    )
    dedupe_capacity: int = setting(
        50_000, "Station+timestamp pairs remembered to never publish a reading twice."
    )
    metrics_port: int = setting(9405, "Port of the gateway's /metrics endpoint (0: off).")


@dataclass(frozen=True)
class FakeApiSettings:
    """The fake traffic-management API of `make run` and the tests (`casatwin gateway fake-api`)."""

    host: str = setting("127.0.0.1", "Address the fake API listens on (loopback by default).")
    port: int = setting(8470, "Port of the fake API.")
    seed: int = setting(7, "Random seed of the detector values; the same seed gives the same feed.")
    period_s: float = setting(
        20.0, "Detector reporting period: readings are stamped at the end of each period."
    )
    fault: str = setting(
        "none",
        "Fault mode at start: none, slow, http500, timeout, disconnect, malformed, truncated, "
        "billion_laughs or bad_values (switch at run time: `casatwin gateway fault`).",
    )
    fault_count: int = setting(
        0, "Requests the start fault mode lasts before the API recovers (0: until switched)."
    )
    slow_s: float = setting(2.0, "Delay of the `slow` mode (below the gateway's timeout).")
    hang_s: float = setting(
        60.0, "How long the `timeout` mode holds a request (past the gateway's timeout)."
    )
    admin_token_file: str = setting(
        "",
        "File holding the token that `POST /admin/fault` requires (`casatwin gateway fault` "
        "sends it); empty = `<data_dir>/secrets/fake-api-admin.token`, which the devstack "
        "generates. On the appliance the vault provides it.",
    )

    def token_file(self, data_dir: Path) -> Path:
        return secret_file(self.admin_token_file, data_dir, "fake-api-admin.token")


@dataclass(frozen=True)
class RegistrySettings:
    """The driver registry (synthetic identities generated into MariaDB)."""

    drivers: int = setting(
        100_000,
        "Drivers `make run` makes sure the registry holds (at least 13,000: one per taxi; the "
        "benchmark loads 10,000,000); 0 skips the registry load at start-up.",
    )
    seed: int = setting(
        52, "Random seed of the synthetic registry; the same seed, the same people."
    )


@dataclass(frozen=True)
class RulesSettings:
    """The loi 52-05 rule book."""

    book: str = setting(
        "",
        "Rule book file (YAML); empty uses the bundled loi 52-05 book. Copy it to correct "
        "unverified values (`casatwin rules show` lists them).",
    )


@dataclass(frozen=True)
class DashboardSettings:
    """The live dashboard, the kiosk and the history API (one aiohttp application)."""

    host: str = setting(
        "127.0.0.1", "Address the dashboard listens on (`0.0.0.0` to serve a kiosk on the LAN)."
    )
    port: int = setting(8080, "Port of the dashboard (web pages, WebSocket `/ws`, `/api`).")
    position_hz: float = setting(
        2.0, "Vehicle position frames per second pushed to each client (latest position wins)."
    )
    queue_max_messages: int = setting(
        500,
        "Infraction/dispatch/congestion messages a client may have waiting; beyond, the client "
        "is too slow and is disconnected with a reason (the others are not slowed).",
    )
    send_buffer_kb: int = setting(
        512,
        "Kernel send buffer per WebSocket client (KiB): bounds what a stalled client holds "
        "and how soon it is found out (0: the kernel's autotuning, up to megabytes).",
    )
    stall_timeout_s: float = setting(
        15.0, "A client that takes nothing for this long while data waits is disconnected."
    )
    recent_infractions: int = setting(
        200, "Infractions kept in memory for the snapshot a client gets on connect."
    )
    replay_messages: int = setting(
        2000,
        "At start, messages re-read per partition of the infraction, dispatch and congestion "
        "topics so that a restarted dashboard shows the recent past.",
    )
    vehicle_ttl_s: float = setting(120.0, "A vehicle not heard from for this long leaves the map.")
    history_minutes: int = setting(60, "Minutes of the infraction and congestion plot.")
    kiosk_language: str = setting("fr", "Language of `/kiosk`: `fr` or `en`.")
    session_ttl_s: int = setting(8 * 3600, "Lifetime of an operator's login session.")
    session_idle_s: int = setting(
        1800, "An operator's session ends after this many seconds without a request."
    )
    login_max_failures: int = setting(
        5, "Failed logins allowed per address and per operator name within the window."
    )
    login_window_s: int = setting(900, "Window of the login rate limit, in seconds.")
    login_hash_threads: int = setting(
        1,
        "Threads checking passwords at login. Each check (scrypt) holds 128 MiB: logins "
        "beyond this wait their turn instead of adding to the dashboard's memory.",
    )
    login_queue_max: int = setting(
        8,
        "Logins that may wait for a password check; more at once are refused with 503 and "
        "Retry-After (a spray of logins must not keep operators waiting for minutes).",
    )
    cookie_secure: bool = setting(
        False,
        "Mark the session cookie Secure even without `tls_cert_file` (behind a TLS proxy); "
        "with TLS it always is.",
    )
    tls_cert_file: str = setting(
        "",
        "Certificate chain (PEM) to serve HTTPS with, and HSTS and Secure cookies; empty = "
        "plain HTTP (`make run` on loopback). The appliance's CA signs one per dashboard node.",
    )
    tls_key_file: str = setting("", "Private key (PEM) of `tls_cert_file`.")
    max_clients: int = setting(
        500,
        "WebSocket clients served at once; more are refused with 503 and Retry-After "
        "(each costs memory and a share of every tick).",
    )
    metrics_port: int = setting(9407, "Port of the dashboard's /metrics endpoint (0: off).")


@dataclass(frozen=True)
class ProcessorSettings:
    """The Spark processor: detection of infractions from the telemetry."""

    master: str = setting(
        "local[*]", "Spark master: `local[*]` (every core here) or `spark://HOST:7077`."
    )
    spark_auth_file: str = setting(
        "",
        "Spark properties file holding `spark.authenticate` and the cluster's shared secret "
        "(`spark.authenticate.secret`), handed to spark-submit as `--properties-file`: the "
        "secret is read inside the JVM, never put on a command line. Empty = no "
        "authentication (`local[*]` needs none). On the appliance: from the vault, the "
        "processor's user's alone.",
    )
    checkpoint_dir: str = setting(
        "",
        "Spark checkpoints (offsets, state, sink bookkeeping); empty = "
        "`<data_dir>/processor/checkpoints`. On a cluster: a directory every node shares.",
    )
    trigger_ms: int = setting(
        0, "Micro-batch trigger interval; 0 starts the next batch as soon as one ends."
    )
    max_records_per_batch: int = setting(
        200000, "Most telemetry records one micro-batch admits (0: no limit)."
    )
    read_tasks: int = setting(
        0,
        "Spark tasks that decode a micro-batch's telemetry (the Kafka connector's one per "
        "partition, coalesced): fewer Python tasks per batch. 0: Spark's default parallelism "
        "(the cores of `local[*]`, or the cluster's).",
    )
    shuffle_partitions: int = setting(
        1,
        "Spark shuffle partitions (the per-vehicle state is split into this many); one task "
        "per stateful stage is the fastest micro-batch on a 2-core node. A checkpoint keeps "
        "the number it was started with.",
    )
    state_buckets: int = setting(
        4,
        "Groups the vehicles' detector state is kept in (a hash of the vehicle id); fewer "
        "means less work per micro-batch. A checkpoint keeps the number it was started with.",
    )
    state_store: str = setting("rocksdb", "State store provider: `rocksdb` or `hdfs` (in memory).")
    timer_batches: bool = setting(
        False,
        "Let Spark run a batch with no new data whenever the watermark moves, so that the "
        "infractions query's timers (a parked car's dwell, an episode's end) fire at once "
        "(Spark's default). Off: a fix never waits behind such a batch (p50 −60 to −120 ms "
        "measured, p95 within the spread); the timers fire with the next telemetry, and when "
        "it is silent for `timers_silence_s` the processor asks for a batch itself "
        "(casatwin.processor.timers).",
    )
    timers_silence_s: float = setting(
        2.0,
        "With `timer_batches` off: how long the infractions query may see no telemetry, "
        "after a batch that moved the watermark, before the processor asks it for a batch "
        "that fires its due timers (above the fleet's report interval, 1 s).",
    )
    scheduler: str = setting(
        "fair",
        "How the queries share the cores: `fair` (Spark's fair scheduler: the infractions "
        "query's tasks go before the congestion windows' when both wait; pools in "
        "processor/scheduler-pools.xml) or `fifo` (jobs in the order they come).",
    )
    starting_offsets: str = setting(
        "latest",
        "Where a query with no checkpoint starts: `earliest`, `latest` or a JSON offset map.",
    )
    watermark_delay_s: float = setting(
        30.0,
        "How late (event time) a fix may arrive and still be judged: more than the skew "
        "between partitions while catching up. Timers of silent vehicles wait this long.",
    )
    dwell_s: float = setting(
        120.0, "Seconds stationary in a no-parking zone before it is illegal parking."
    )
    speed_tolerance_kmh: float = setting(
        0.0, "Speed over the limit tolerated before a fix counts as speeding."
    )
    speeding_gap_s: float = setting(10.0, "Seconds without a fix that end a speeding episode.")
    client_id: str = setting("casatwin-processor", "Kafka client id prefix of the processor.")
    consumer_group: str = setting(
        "casatwin-processor",
        "Prefix of the groups each query commits its processed offsets to "
        "(<prefix>-infractions, <prefix>-congestion), for lag monitoring only (recovery "
        "uses the checkpoint); empty: no commits.",
    )
    driver_memory: str = setting("1g", "Spark driver heap (with local[*], the whole engine).")
    executor_memory: str = setting("1g", "Heap of each executor on a standalone cluster.")
    progress_every_s: float = setting(10.0, "How often the processor logs its progress.")
    metrics_port: int = setting(9402, "Port of the processor's /metrics endpoint (0: off).")


@dataclass(frozen=True)
class DispatcherSettings:
    """The police dispatcher (issue 6) and the simulator's side of the dispatch loop."""

    consumer_group: str = setting(
        "casatwin-dispatcher", "Consumer group of the dispatcher instances (they share work)."
    )
    handling_speeding_s: float = setting(600.0, "Time a unit spends on a speeding case.")
    handling_red_light_s: float = setting(600.0, "Time a unit spends on a red-light case.")
    handling_illegal_parking_s: float = setting(
        300.0, "Time a unit spends on an illegal-parking case."
    )
    queue_check_s: float = setting(
        1.0, "How often queued incidents are offered the units that became free."
    )
    congestion_refresh_s: float = setting(
        10.0, "How often current segment speeds from casatwin.congestion update the routing."
    )
    min_speed_kmh: float = setting(
        5.0, "Slowest speed a congested segment is routed at (a jam is slow, not closed)."
    )
    simulate: bool = setting(
        True, "The simulator drives the units the dispatcher assigns (casatwin.dispatch)."
    )
    backoff_base_s: float = setting(
        0.5, "First wait before trying again while MariaDB or the read model is unreachable."
    )
    backoff_max_s: float = setting(
        5.0,
        "Longest wait between attempts while a store is unreachable; below "
        "kafka.max_poll_interval_ms, so the instance keeps its partitions meanwhile.",
    )
    metrics_port: int = setting(9404, "Port of the dispatcher's /metrics endpoint (0: off).")

    def handling_s(self, infraction_type: str) -> float:
        """Handling time on scene for one type of infraction."""
        return float(getattr(self, f"handling_{infraction_type}_s"))


@dataclass(frozen=True)
class CongestionSettings:
    """Congestion windows (a second query of the processor): windows, levels, anomalies."""

    window_s: int = setting(300, "Length of a congestion window (event time).")
    slide_s: int = setting(60, "A new window starts every this many seconds.")
    watermark_s: int = setting(
        600, "How late a reading may arrive and still update its windows; later ones are dropped."
    )
    trigger_ms: int = setting(
        15000,
        "Micro-batch interval of the congestion query. Each batch re-publishes every window "
        "its data touched (five per busy segment), so the work grows as this shrinks.",
    )
    light_ratio: float = setting(
        0.75, "Speed ratio (average / free-flow, the limit) below which a segment is `light`."
    )
    moderate_ratio: float = setting(0.5, "Speed ratio below which a segment is `moderate`.")
    severe_ratio: float = setting(0.25, "Speed ratio below which a segment is `severe`.")
    light_queue: float = setting(
        5.0, "Average queue (vehicles) from which an intersection is `light`."
    )
    moderate_queue: float = setting(10.0, "Average queue from which an intersection is `moderate`.")
    severe_queue: float = setting(20.0, "Average queue from which an intersection is `severe`.")
    light_wait_s: float = setting(45.0, "Peak wait from which an intersection is `light`.")
    moderate_wait_s: float = setting(90.0, "Peak wait from which an intersection is `moderate`.")
    severe_wait_s: float = setting(150.0, "Peak wait from which an intersection is `severe`.")
    anomaly_ratio: float = setting(
        0.5,
        "A segment window is an anomaly when its average speed is below this share of the "
        "segment's usual speed at that hour (median of its past windows at that hour).",
    )
    baseline_days: int = setting(28, "Days of history the usual speed is the median of.")
    baseline_min_windows: int = setting(
        10, "Past windows at that hour needed before a segment can be flagged."
    )
    retention_days: float = setting(
        35.0, "Congestion windows kept in the read model (event time); 0 keeps them all."
    )


@dataclass(frozen=True)
class PrivacySettings:
    """Driver data: who may see an identity, and how long the read model keeps infractions."""

    pseudonym_key_file: str = setting(
        "",
        "File holding the secret key of the drivers' pseudonymous references (a keyed hash "
        "of the CIN that topics and the read model carry instead of the identity); empty = "
        "`<data_dir>/secrets/driver-pseudonym.key`, which the devstack generates. On the "
        "appliance the vault provides it.",
    )
    infraction_retention_days: float = setting(
        90.0,
        "Infractions kept in the read model (event time, before the newest one); the ledger "
        "in MariaDB keeps every infraction. 0 keeps them all.",
    )

    def key_file(self, data_dir: Path) -> Path:
        return secret_file(self.pseudonym_key_file, data_dir, "driver-pseudonym.key")


@dataclass(frozen=True)
class Settings:
    """All settings, one section per concern."""

    general: GeneralSettings = field(default_factory=GeneralSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mongo: MongoSettings = field(default_factory=MongoSettings)
    mariadb: MariaDBSettings = field(default_factory=MariaDBSettings)
    city: CitySettings = field(default_factory=CitySettings)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    fake_api: FakeApiSettings = field(default_factory=FakeApiSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    processor: ProcessorSettings = field(default_factory=ProcessorSettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    congestion: CongestionSettings = field(default_factory=CongestionSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)

    def __post_init__(self) -> None:
        # The Kafka clients get only their section; it must know the data directory too.
        if self.kafka.data_dir != self.general.data_dir:
            kafka = dataclasses.replace(self.kafka, data_dir=self.general.data_dir)
            object.__setattr__(self, "kafka", kafka)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every section from ``CASATWIN_*`` variables, defaults for the rest."""
        env = os.environ if env is None else env
        sections = {}
        for section in dataclasses.fields(cls):
            sections[section.name] = _load_section(section.default_factory, section.name, env)
        return cls(**sections)

    def replace(self, **sections: Any) -> Settings:
        """A copy with some fields replaced: ``s.replace(kafka={"bootstrap": "h:1"})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def for_service(self, principal: str) -> Settings:
        """These settings for the service ``principal``: it authenticates to Kafka as
        itself unless ``CASATWIN_KAFKA_USER`` says otherwise."""
        if self.kafka.user:
            return self
        return self.replace(kafka={"user": principal})

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand to child processes."""
        out = {}
        for section, name, _, _ in describe():
            value = getattr(getattr(self, section), name)
            out[env_name(section, name)] = _format(value)
        return out


def env_name(section: str, name: str) -> str:
    """``("kafka", "bootstrap")`` → ``CASATWIN_KAFKA_BOOTSTRAP``."""
    return f"{PREFIX}{section.upper()}_{name.upper()}"


def describe() -> list[tuple[str, str, dataclasses.Field, type]]:
    """Every setting as (section, name, field, type), in declaration order."""
    rows = []
    for section in dataclasses.fields(Settings):
        section_cls = section.default_factory
        hints = get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            if not f.metadata.get("internal"):
                rows.append((section.name, f.name, f, hints[f.name]))
    return rows


def known_variables() -> set[str]:
    return {env_name(section, name) for section, name, _, _ in describe()}


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``CASATWIN_*`` variables that name no setting: most likely typos."""
    env = os.environ if env is None else env
    known = known_variables()
    return sorted(k for k in env if k.startswith(PREFIX) and k not in known)


def markdown_reference() -> str:
    """The reference table of every setting, for docs/configuration.md."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for section, name, f, _ in describe():
        default = _format(f.default) if f.default is not dataclasses.MISSING else ""
        lines.append(f"| `{env_name(section, name)}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


def _load_section(section_cls: Any, section: str, env: Mapping[str, str]) -> Any:
    hints = get_type_hints(section_cls)
    values = {}
    for f in dataclasses.fields(section_cls):
        var = env_name(section, f.name)
        if var in env and not f.metadata.get("internal"):
            values[f.name] = _parse(var, env[var], hints[f.name])
    return section_cls(**values)


def _parse(var: str, raw: str, typ: type) -> Any:
    try:
        if typ is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        if typ is Path:
            return Path(raw)
        return typ(raw)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(typ, typ.__name__)
        raise UserError(f"{var}={raw!r} is not {kind}", hint=f"set {var} to {kind}.") from None


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load() -> Settings:
    """The settings of this process, from its environment."""
    return Settings.from_env()
