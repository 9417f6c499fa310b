"""The /metrics endpoint every service exposes for Prometheus."""

from __future__ import annotations

from prometheus_client import start_http_server

from casatwin.logs import get_logger

log = get_logger("metrics")


def serve(port: int, component: str) -> None:
    """Serve /metrics on ``port`` (0 disables it) in a background thread."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr="0.0.0.0")
    except OSError as exc:
        # Metrics are worth a warning, not an outage: the service runs on without them.
        log.warning(
            "metrics endpoint not started", component=component, port=port, reason=exc.strerror
        )
        return
    log.info("metrics endpoint ready", component=component, url=f"http://0.0.0.0:{port}/metrics")
