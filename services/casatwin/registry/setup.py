"""What ``make run`` needs from the system of record before the services start."""

from __future__ import annotations

from casatwin.city.load import PackError
from casatwin.city.load import load as load_pack
from casatwin.config import Settings
from casatwin.logs import get_logger
from casatwin.registry import loader, schema

log = get_logger("registry")


def prepare(settings: Settings) -> None:
    """Migrate the schema and make sure the registry holds at least
    ``CASATWIN_REGISTRY_DRIVERS`` drivers (a larger one, say the 10M of a benchmark, stays).

    Quick and idempotent: an up-to-date schema and a registry already loaded cost a few
    queries. Without a usable city pack the police units are left as they are (with a
    warning): the rest of the registry does not depend on the map.
    """
    schema.migrate_database(settings.mariadb)
    if settings.registry.drivers == 0:
        log.info("registry load skipped (CASATWIN_REGISTRY_DRIVERS=0)")
        return
    try:
        units = loader.police_units_of(load_pack(settings.city.pack))
    except PackError as exc:
        log.warning("police units not loaded: no usable city pack", reason=exc.message)
        units = None
    loader.load(
        settings.mariadb,
        settings.registry.drivers,
        seed=settings.registry.seed,
        police_units=units,
        at_least=True,
    )
