"""Who may do what on the bus: one Kafka principal per service, and only what it needs.

:data:`PRINCIPALS` is the table (docs/security.md prints it); :func:`ensure_access` makes
the broker match it, as ``admin``: each principal's SCRAM credential from its password file
(:mod:`casatwin.bus.credentials`), an ACL per (topic, operation), and the removal of any
ACL the table does not list. The devstack runs it at every start and the appliance at every
converge, so the table is the truth on both.

A principal's consumer groups are the ones named ``casatwin-<principal>…`` (the processor's
lag groups and Spark's readers, the dispatcher's group, the simulator's dispatch bridge).
A reader that joins no group (the gateway's, the dashboard's) still names one, which
librdkafka asks the broker about: ``<client id>-unused``, under the same prefix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import confluent_kafka
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from casatwin.bus import topics
from casatwin.bus.admin import admin_client, ensure_topics
from casatwin.bus.credentials import ADMIN, CONTROLLER, password
from casatwin.config import KafkaSettings
from casatwin.errors import UserError
from casatwin.logs import get_logger

log = get_logger("bus")

SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class Principal:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    why: str

    @property
    def group_prefix(self) -> str:
        return f"casatwin-{self.name}"


PRINCIPALS: tuple[Principal, ...] = (
    Principal(
        "simulator",
        reads=(topics.DISPATCH,),
        writes=(topics.TELEMETRY, topics.SENSORS_INTERSECTION, topics.DISPATCH),
        why="publishes the fleet and the intersections; takes orders, reports the units' progress",
    ),
    Principal(
        "gateway",
        reads=(topics.SENSORS_HIGHWAY,),
        writes=(topics.SENSORS_HIGHWAY, topics.DLQ),
        why="publishes the motorway stations' readings; rereads its own to skip duplicates",
    ),
    Principal(
        "processor",
        reads=(topics.TELEMETRY, topics.SENSORS_INTERSECTION, topics.INFRACTIONS, topics.TIMERS),
        writes=(topics.INFRACTIONS, topics.CONGESTION, topics.DLQ, topics.TIMERS),
        why="the only writer of infractions and congestion windows; after a crash it rereads "
        "the infractions it was publishing, to send each once; asks itself for a batch when "
        "timers are due and the telemetry is silent",
    ),
    Principal(
        "dispatcher",
        reads=(topics.INFRACTIONS, topics.DISPATCH, topics.CONGESTION),
        writes=(topics.DISPATCH, topics.DLQ),
        why="assigns units to infractions and follows them; sets aside what it cannot place",
    ),
    Principal(
        "dashboard",
        reads=(topics.TELEMETRY, topics.INFRACTIONS, topics.DISPATCH, topics.CONGESTION),
        writes=(),
        why="only reads: the live map and feed",
    ),
)

USERS: tuple[str, ...] = (ADMIN, CONTROLLER, *(p.name for p in PRINCIPALS))


def principal(name: str) -> Principal:
    for p in PRINCIPALS:
        if p.name == name:
            return p
    raise KeyError(name)


def markdown_table(table: tuple[Principal, ...] = PRINCIPALS) -> str:
    """The table as docs/security.md shows it."""
    lines = [
        "| principal | reads | writes | consumer groups | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in table:
        groups = f"`{p.group_prefix}*`" if p.reads else "none"
        lines.append(
            f"| `{p.name}` | {_names(p.reads)} | {_names(p.writes)} | {groups} | {p.why} |"
        )
    return "\n".join(lines) + "\n"


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "nothing"


def acl_bindings(table: tuple[Principal, ...] = PRINCIPALS) -> set[AclBinding]:
    """Every ACL the table implies (READ and WRITE imply DESCRIBE; WRITE implies the
    idempotent producer's right)."""
    bindings = set()
    for p in table:
        user = f"User:{p.name}"
        for operation, names in ((AclOperation.READ, p.reads), (AclOperation.WRITE, p.writes)):
            for name in names:
                bindings.add(
                    _allow(ResourceType.TOPIC, name, ResourcePatternType.LITERAL, user, operation)
                )
        if p.reads:
            bindings.add(
                _allow(
                    ResourceType.GROUP,
                    p.group_prefix,
                    ResourcePatternType.PREFIXED,
                    user,
                    AclOperation.READ,
                )
            )
    return bindings


def _allow(
    kind: ResourceType, name: str, pattern: ResourcePatternType, user: str, operation: AclOperation
) -> AclBinding:
    return AclBinding(kind, name, pattern, user, "*", operation, AclPermissionType.ALLOW)


def ensure_access(settings: KafkaSettings, timeout_s: float = 15.0) -> None:
    """Make the broker's users and ACLs those of :data:`PRINCIPALS` (as ``admin``)."""
    admin = admin_client(dataclasses.replace(settings, user=ADMIN))
    upserts = [
        UserScramCredentialUpsertion(
            p.name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            password(settings, p.name).encode(),
        )
        for p in PRINCIPALS
    ]
    for user, future in admin.alter_user_scram_credentials(
        upserts, request_timeout=timeout_s
    ).items():
        _result(future, timeout_s, f"could not set the Kafka password of {user!r}")
    wanted = acl_bindings()
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    present = set(
        _result(
            admin.describe_acls(everything, request_timeout=timeout_s),
            timeout_s,
            "could not list the ACLs",
        )
    )
    missing = wanted - present
    stray = present - wanted
    if missing:
        for future in admin.create_acls(list(missing), request_timeout=timeout_s).values():
            _result(future, timeout_s, "could not create an ACL")
    if stray:
        filters = [_filter_of(b) for b in stray]
        for future in admin.delete_acls(filters, request_timeout=timeout_s).values():
            _result(future, timeout_s, "could not delete an ACL")
    log.info(
        "Kafka access matches the table",
        principals=len(PRINCIPALS),
        acls=len(wanted),
        created=len(missing),
        removed=len(stray),
    )


def provision(settings: KafkaSettings) -> None:
    """The bus as the services expect it: the topics, then each principal's user and ACLs
    (as ``admin``): what `make run`, the benchmarks and the tests' brokers start with."""
    ensure_topics(dataclasses.replace(settings, user=ADMIN))
    ensure_access(settings)


def _filter_of(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def _result(future: object, timeout_s: float, what: str) -> object:
    try:
        return future.result(timeout_s)  # type: ignore[attr-defined]
    except confluent_kafka.KafkaException as exc:
        raise UserError(
            f"{what}: {exc.args[0].str()}",
            hint="ensure_access runs as the Kafka user `admin` (its password file must be there)",
        ) from None
