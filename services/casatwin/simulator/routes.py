"""How vehicles find their way: a next-hop table for trips, ragged routes for orders.

Free taxis drive shortest paths to random destinations. Rather than storing each taxi's
path, the simulator keeps a *next-hop table*: for every destination node and every node,
the segment to take next on the quickest path (one reverse Dijkstra per destination, in
SciPy's C code). Choosing the next segment at a junction is then one fancy-indexing
operation for all the vehicles that reach a junction in the step.

Vehicles that are told where to go (police units on a dispatch, scripted vehicles)
follow explicit routes kept flat in a :class:`RouteStore` (one buffer plus a cursor and an
end per vehicle), never as Python lists per vehicle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.sparse.csgraph import dijkstra

from casatwin.city.routing import Router

IntArray = NDArray[np.int64]

HOP_TABLE_BUDGET = 16_000_000  # entries (int32): ~64 MB whatever the size of the city
DIJKSTRA_CHUNK = 256  # destinations per SciPy call, to bound its float64 distance matrix


class HopTable:
    """``hop[k, node]``: the segment leaving ``node`` on the quickest path to destination
    ``k`` (``-1`` at the destination itself or when it cannot be reached)."""

    def __init__(self, router: Router, destinations: IntArray) -> None:
        pack = router.pack
        self.destinations = np.asarray(destinations, dtype=np.int64)
        self.dest_slot = np.full(pack.n_nodes, -1, dtype=np.int64)
        self.dest_slot[self.destinations] = np.arange(len(self.destinations))
        reverse = router.graph.T.tocsr()
        # (from, to) → segment, by binary search over the sorted pair keys
        keys = pack.seg_from * pack.n_nodes + pack.seg_to
        order = np.argsort(keys)
        sorted_keys = keys[order]
        self.hop = np.full((len(self.destinations), pack.n_nodes), -1, dtype=np.int32)
        for start in range(0, len(self.destinations), DIJKSTRA_CHUNK):
            chunk = self.destinations[start : start + DIJKSTRA_CHUNK]
            # On the reversed graph the "predecessor" of v is the next node from v forward.
            _, successor = dijkstra(reverse, directed=True, indices=chunk, return_predecessors=True)
            nodes = np.broadcast_to(np.arange(pack.n_nodes), successor.shape)
            ok = successor >= 0
            pair = nodes[ok] * pack.n_nodes + successor[ok]
            rows = self.hop[start : start + len(chunk)]
            rows[ok] = order[np.searchsorted(sorted_keys, pair)]

    @classmethod
    def build(
        cls, router: Router, rng: np.random.Generator, must_include: Sequence[int] = ()
    ) -> HopTable:
        """A table over every node, or over a random sample of destinations (plus
        ``must_include``) when the city is too large for every node."""
        n = router.pack.n_nodes
        k = max(64, HOP_TABLE_BUDGET // max(n, 1))
        if k >= n:
            return cls(router, np.arange(n))
        sample = rng.choice(n, size=k, replace=False)
        chosen = np.unique(np.concatenate([sample, np.asarray(must_include, dtype=np.int64)]))
        return cls(router, chosen)

    def __len__(self) -> int:
        return len(self.destinations)

    def next_segment(self, dest: IntArray, node: IntArray) -> IntArray:
        return self.hop[dest, node].astype(np.int64)


class RouteStore:
    """Explicit routes of a few vehicles, flat: ``buffer[cursor[v]:end[v]]`` is what
    vehicle ``v`` has left to drive, ``buffer[cursor[v]]`` being its current segment."""

    def __init__(self, n_vehicles: int, capacity: int = 4096) -> None:
        self.buffer = np.zeros(capacity, dtype=np.int64)
        self.used = 0
        self.cursor = np.full(n_vehicles, -1, dtype=np.int64)
        self.end = np.full(n_vehicles, -1, dtype=np.int64)

    def active(self, vehicles: IntArray | None = None) -> NDArray[np.bool_]:
        return self.cursor >= 0 if vehicles is None else self.cursor[vehicles] >= 0

    def assign(self, vehicle: int, route: IntArray) -> None:
        """Give ``vehicle`` a route (its first segment is where the vehicle is now)."""
        route = np.asarray(route, dtype=np.int64)
        self.clear(vehicle)
        if self.used + len(route) > len(self.buffer):
            self._compact(extra=len(route))
        self.buffer[self.used : self.used + len(route)] = route
        self.cursor[vehicle] = self.used
        self.end[vehicle] = self.used + len(route)
        self.used += len(route)

    def clear(self, vehicle: int) -> None:
        self.cursor[vehicle] = -1
        self.end[vehicle] = -1

    def remaining(self, vehicle: int) -> IntArray:
        if self.cursor[vehicle] < 0:
            return np.empty(0, dtype=np.int64)
        return self.buffer[self.cursor[vehicle] : self.end[vehicle]].copy()

    def next_after_current(self, vehicles: IntArray) -> IntArray:
        """The segment after the current one for each vehicle, or -1 at the route's end."""
        nxt = self.cursor[vehicles] + 1
        has_next = nxt < self.end[vehicles]
        return np.where(has_next, self.buffer[np.where(has_next, nxt, 0)], -1)

    def advance(self, vehicles: IntArray) -> None:
        """Move the cursor of vehicles that just entered their next segment."""
        self.cursor[vehicles] += 1

    def _compact(self, extra: int) -> None:
        live = np.flatnonzero(self.cursor >= 0)
        lengths = self.end[live] - self.cursor[live]
        capacity = max(len(self.buffer), 2 * (int(lengths.sum()) + extra))
        buffer = np.zeros(capacity, dtype=np.int64)
        position = 0
        for v, n in zip(live, lengths):  # few vehicles have explicit routes
            buffer[position : position + n] = self.buffer[self.cursor[v] : self.end[v]]
            self.cursor[v], self.end[v] = position, position + n
            position += n
        self.buffer, self.used = buffer, position
