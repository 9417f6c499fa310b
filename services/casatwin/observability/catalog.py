"""Which metric families each service exports: the modules that declare them, imported.

Grafana's panels and Prometheus's rules are checked against :func:`exported_names`, so a
renamed metric breaks a test rather than a dashboard. Add a module here when it declares
metrics a service serves on its ``/metrics`` port.
"""

from __future__ import annotations

import importlib

from prometheus_client.metrics import MetricWrapperBase

# Every process that talks to the bus: the producer, the consumer side and the DLQ.
_BUS = ("casatwin.bus.producer", "casatwin.bus.dlq", "casatwin.observability.families")

SERVICES: dict[str, tuple[str, ...]] = {
    "simulator": (*_BUS, "casatwin.simulator.service"),
    "gateway": (*_BUS, "casatwin.gateway.service"),
    "processor": (*_BUS, "casatwin.processor.app", "casatwin.processor.sink"),
    "dashboard": (*_BUS, "casatwin_dashboard.feed", "casatwin_dashboard.fanout"),
    "dispatcher": (*_BUS, "casatwin.dispatch.service"),
}

# What prometheus_client's default collectors add to every endpoint.
RUNTIME = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_gc_collections_total",
    "python_info",
)

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
    "info": ("_info",),
}


def families(service: str) -> dict[str, str]:
    """``{family name: type}`` of the metrics ``service`` declares."""
    found: dict[str, str] = {}
    for module_name in SERVICES[service]:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for metric in value.describe():
                    found[metric.name] = metric.type
    return found


def exported_names(service: str | None = None) -> set[str]:
    """Sample names a query can use (``_total``, ``_bucket``... included), for one service
    or all of them."""
    services = [service] if service else list(SERVICES)
    names = set(RUNTIME)
    for name in services:
        for family, kind in families(name).items():
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names
