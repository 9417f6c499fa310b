"""``casatwin tail``, ``casatwin topics`` and ``casatwin kafka-access``."""

from __future__ import annotations

import argparse
import sys
import time

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    tail = subparsers.add_parser(
        "tail",
        help="print live messages of a topic",
        description="Print the messages of a topic as JSON lines, as they arrive.",
    )
    tail.add_argument(
        "topic", help="topic name, e.g. casatwin.telemetry (or a short name: telemetry)"
    )
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest message kept"
    )
    start.add_argument(
        "--last", type=int, metavar="N", help="start with the last N messages of each partition"
    )
    tail.add_argument("--key", help="only messages with this key (e.g. a vehicle id)")
    tail.add_argument("-n", "--limit", type=int, help="stop after this many messages")
    tail.add_argument(
        "--timeout", type=float, help="stop after this many seconds without a message"
    )
    tail.set_defaults(handler=run_tail)

    topics = subparsers.add_parser(
        "topics", help="list or create the topics", description="Manage the CasaTwin topics."
    )
    topics.add_argument("action", choices=["list", "create"])
    topics.set_defaults(handler=run_topics)

    access = subparsers.add_parser(
        "kafka-access",
        help="show or apply who may do what on the bus",
        description="The Kafka principal of each service and the topics it may read and "
        "write (docs/security.md). `apply` makes the broker's users and ACLs match, as "
        "admin: passwords from CASATWIN_KAFKA_CREDENTIALS_DIR, stray ACLs removed.",
    )
    access.add_argument("action", choices=["show", "apply"])
    access.set_defaults(handler=run_access)


def resolve_topic(name: str) -> str:
    """Accept ``telemetry`` for ``casatwin.telemetry``."""
    return name if name.startswith("casatwin.") or "." in name else f"casatwin.{name}"


def run_tail(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.bus import consumer

    topic = resolve_topic(args.topic)
    start = "earliest" if args.from_beginning else (f"-{args.last}" if args.last else "latest")
    reader = consumer.reader(settings.kafka, [topic], "casatwin-tail", start=start)
    key = args.key.encode() if args.key else None
    shown = 0
    last_seen = time.monotonic()
    try:
        while args.limit is None or shown < args.limit:
            batch = consumer.messages(reader, max_messages=500, timeout_s=0.5)
            if batch:
                last_seen = time.monotonic()
            elif args.timeout and time.monotonic() - last_seen > args.timeout:
                break
            for message in batch:
                if key is not None and message.key() != key:
                    continue
                sys.stdout.write(message.value().decode("utf-8", "replace") + "\n")
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    break
            sys.stdout.flush()
    except BrokenPipeError:  # `casatwin tail ... | head`
        pass
    finally:
        reader.close()
    return 0


def run_topics(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.bus import admin

    if args.action == "create":
        created = admin.ensure_topics(settings.kafka)
        print(f"created: {', '.join(created)}" if created else "all topics exist")
        return 0
    for name, partitions in admin.describe(settings.kafka).items():
        print(f"{name}\t{partitions} partitions")
    return 0


def run_access(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin.bus import access

    if args.action == "apply":
        access.ensure_access(settings.kafka)
        print(f"Kafka access applied: {len(access.PRINCIPALS)} principals")
        return 0
    print(access.markdown_table(), end="")
    return 0
