"""Who is in the fleet: the ids and kinds of the taxis, shared by the simulator and registry.

The simulator with N taxis drives the first N of :data:`FLEET_SIZE`; the registry holds all
of them with their drivers, so any fleet size the simulator runs has a driver for every taxi.
"""

from __future__ import annotations

FLEET_SIZE = 13_000  # Casablanca's petits and grands taxis, roughly
GRAND_TAXI_EVERY = 10  # 3 in 10 taxis are grands taxis (positions 0, 3, 6 of each ten)


def taxi_id(index: int) -> str:
    """``0`` → ``TX-00001``."""
    return f"TX-{index + 1:05d}"


def taxi_index(vehicle_id: str) -> int:
    return int(vehicle_id.removeprefix("TX-")) - 1


def taxi_kind(index: int) -> str:
    return "taxi_grand" if index % GRAND_TAXI_EVERY in (0, 3, 6) else "taxi_petit"
