"""``casatwin processor``: the Spark streaming application."""

from __future__ import annotations

import argparse

from casatwin.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "processor",
        help="run the Spark processor (detect, decide, record, publish infractions)",
        description=(
            "Run the Spark Structured Streaming application: telemetry from Kafka, "
            "infraction detection, registry enrichment, decisions under loi 52-05, the "
            "ledger, the read model and casatwin.infractions. Stops cleanly on Ctrl-C/SIGTERM."
        ),
    )
    parser.add_argument(
        "--master",
        help="Spark master, e.g. spark://HOST:7077 (default: CASATWIN_PROCESSOR_MASTER, local[*])",
    )
    parser.add_argument(
        "--checkpoint-dir",
        help="checkpoints directory (default: CASATWIN_PROCESSOR_CHECKPOINT_DIR)",
    )
    parser.add_argument(
        "--queries",
        help="the queries this process runs, comma-separated: infractions, congestion "
        "(default: both)",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="forget the checkpoints first: start over from CASATWIN_PROCESSOR_STARTING_OFFSETS",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.for_service("processor")  # its own Kafka principal
    import signal
    import threading

    from casatwin import metrics
    from casatwin.logs import get_logger
    from casatwin.processor.app import QUERY_NAMES, ProcessorApp, default_queries

    log = get_logger("processor")
    if args.checkpoint_dir:
        settings = settings.replace(processor={"checkpoint_dir": args.checkpoint_dir})
    names = QUERY_NAMES if args.queries is None else tuple(args.queries.replace(" ", "").split(","))
    app = ProcessorApp(settings, master=args.master, queries=default_queries(settings, names))
    if args.reset:
        app.reset()
        log.warning("checkpoints deleted; starting over", directory=str(app.checkpoints))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    metrics.serve(settings.processor.metrics_port, "processor")
    app.start()
    try:
        app.run_until(stop)
    finally:
        log.info("stopping the processor")
        app.stop()
    return 0
