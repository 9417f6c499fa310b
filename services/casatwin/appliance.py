"""The appliance's Ansible tree, read from Python: its roles' plugins and its inventories'
groups (the benchmarks' memory budgets and the appliance tests both need them).

Only in a checkout: an installed service has no ``roles/`` or ``inventory/`` beside it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
GARAGE_INVENTORY = REPO / "inventory" / "garage"


def role_plugin(role: str, path: str) -> ModuleType:
    """A Python plugin of a role (a filter or a lookup), imported as a plain module."""
    file = REPO / "roles" / role / path
    spec = importlib.util.spec_from_file_location(f"casatwin_{role}_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inventory_groups(*inventories: Path | str) -> dict[str, list[str]]:
    """Group → hosts of the inventories together (paths relative to the checkout), as
    Ansible reads them; ``all`` holds every host."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    sources = [str(REPO / path) for path in inventories]
    return InventoryManager(loader=DataLoader(), sources=sources).get_groups_dict()
