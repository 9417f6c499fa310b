"""Shortest paths on the road graph (Dijkstra in SciPy's C code).

Weights are travel times in seconds per segment: free-flow from the speed limits unless
the caller passes current ones (from the congestion windows, say).
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from casatwin.city.model import CityPack

UNREACHABLE = -9999  # SciPy's predecessor value for "no path"


class Router:
    """Routes between nodes, as arrays of segment indices."""

    def __init__(self, pack: CityPack, weights_s: NDArray[np.float64] | None = None) -> None:
        self.pack = pack
        self.weights_s = pack.seg_free_flow_s.copy() if weights_s is None else weights_s
        n = pack.n_nodes
        # The same (from, to) pair never has two segments (the pack validator ensures it),
        # so a node pair identifies its segment. Store segment index + 1: 0 means "none".
        self._segment_of = csr_matrix(
            (np.arange(1, pack.n_segments + 1), (pack.seg_from, pack.seg_to)), shape=(n, n)
        )
        self.graph = csr_matrix((self.weights_s, (pack.seg_from, pack.seg_to)), shape=(n, n))
        self._reverse_graph = self.graph.T.tocsr()  # for searches towards one target

    def segment_between(self, a: int, b: int) -> int:
        return int(self._segment_of[a, b]) - 1

    def path(self, source: int, target: int) -> NDArray[np.int64]:
        """Segments of the quickest path from node ``source`` to node ``target`` (may be empty)."""
        if source == target:
            return np.empty(0, dtype=np.int64)
        _, predecessors = dijkstra(
            self.graph, directed=True, indices=source, return_predecessors=True
        )
        return self._unwind(predecessors, source, target)

    def paths_from(self, source: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(travel time to every node, predecessor of every node) from ``source``."""
        times, predecessors = dijkstra(
            self.graph, directed=True, indices=source, return_predecessors=True
        )
        return times, predecessors

    def times_to(self, target: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(travel time from every node to ``target``, next node on the way) — one reverse
        search, which is how the nearest of many units to one incident is found."""
        times, successors = dijkstra(
            self._reverse_graph, directed=True, indices=target, return_predecessors=True
        )
        return times, successors

    def path_via_successors(
        self, successors: NDArray[np.int64], source: int, target: int
    ) -> NDArray[np.int64]:
        """Segments from ``source`` to ``target`` using the ``times_to(target)`` tree."""
        nodes = [source]
        while nodes[-1] != target:
            nxt = int(successors[nodes[-1]])
            if nxt == UNREACHABLE or len(nodes) > self.pack.n_nodes:
                return np.empty(0, dtype=np.int64)
            nodes.append(nxt)
        return np.array(
            [self.segment_between(a, b) for a, b in itertools.pairwise(nodes)], dtype=np.int64
        )

    def _unwind(
        self, predecessors: NDArray[np.int64], source: int, target: int
    ) -> NDArray[np.int64]:
        nodes = [target]
        while nodes[-1] != source:
            prev = int(predecessors[nodes[-1]])
            if prev == UNREACHABLE:
                return np.empty(0, dtype=np.int64)
            nodes.append(prev)
        nodes.reverse()
        return np.array(
            [self.segment_between(a, b) for a, b in itertools.pairwise(nodes)], dtype=np.int64
        )
