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


def setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    """A dataclass field carrying its documentation (and whether to hide its value)."""
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass(frozen=True)
class GeneralSettings:
    """Where state lives and how services talk about themselves."""

    data_dir: Path = setting(
        Path(".casatwin"), "Runtime state: server data, checkpoints, logs of `make run`."
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
    """The message bus. Any Kafka-protocol broker: Apache Kafka or the embedded Tansu."""

    bootstrap: str = setting("127.0.0.1:9092", "Bootstrap servers, comma separated host:port.")
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
    reconnect_backoff_max_ms: int = setting(
        5000, "Longest wait between reconnect attempts (exponential backoff from 100 ms)."
    )


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
    metrics_port: int = setting(9401, "Port of the simulator's /metrics endpoint (0: off).")


@dataclass(frozen=True)
class Settings:
    """All settings, one section per concern."""

    general: GeneralSettings = field(default_factory=GeneralSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    mongo: MongoSettings = field(default_factory=MongoSettings)
    mariadb: MariaDBSettings = field(default_factory=MariaDBSettings)
    city: CitySettings = field(default_factory=CitySettings)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)

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
        if var in env:
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
