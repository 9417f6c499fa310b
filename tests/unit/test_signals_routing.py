import itertools

import numpy as np
import pytest

from casatwin.city import load, synthetic
from casatwin.city.routing import Router
from casatwin.city.signals import GREEN, RED, UNSIGNALISED, YELLOW, SignalTable, active_phase


@pytest.fixture(scope="module")
def grid():
    return load.from_dict(synthetic.grid())


def test_each_approach_cycles_green_yellow_red(grid):
    table = SignalTable.from_pack(grid)
    x = grid.intersections[0]
    plan = x.plan
    seg = grid.segment_index[plan.phases[0].approaches[0]]
    start, green_end, yellow_end = plan.windows()[0]
    t0 = plan.offset_s
    assert table.colour(seg, t0 + start + 1) == GREEN
    assert table.colour(seg, t0 + green_end + 0.5) == YELLOW
    assert table.colour(seg, t0 + yellow_end + 0.5) == RED
    assert table.colour(seg, t0 + plan.cycle_s + 1) == GREEN  # next cycle
    # The other phase is red while the first is green.
    other = grid.segment_index[plan.phases[1].approaches[0]]
    assert table.colour(other, t0 + start + 1) == RED


def test_conflicting_approaches_are_never_green_together(grid):
    table = SignalTable.from_pack(grid)
    for x in grid.intersections:
        a = [grid.segment_index[s] for s in x.plan.phases[0].approaches]
        b = [grid.segment_index[s] for s in x.plan.phases[1].approaches]
        for t in np.arange(0, x.plan.cycle_s * 2, 0.5):
            assert not ((table.colour(a, t) == GREEN).any() and (table.colour(b, t) == GREEN).any())


def test_unsignalised_segments_and_wait(grid):
    table = SignalTable.from_pack(grid)
    plain = np.flatnonzero(table.intersection < 0)[0]
    assert table.colour(plain, 12.0) == UNSIGNALISED
    assert table.seconds_until_green(plain, 12.0) == 0
    x = grid.intersections[0]
    seg = grid.segment_index[x.plan.phases[1].approaches[0]]
    t = x.plan.offset_s + 1.0  # phase A green, so B waits for the rest of A
    start_b = x.plan.windows()[1][0]
    assert table.seconds_until_green(seg, t) == pytest.approx(start_b - 1.0)


def test_active_phase_names(grid):
    x = grid.intersections[0]
    assert active_phase(grid, 0, x.plan.offset_s + 1) == ("A", "green")
    assert active_phase(grid, 0, x.plan.offset_s + x.plan.windows()[1][0] + 1) == ("B", "green")


def test_route_is_connected_and_quickest(grid):
    router = Router(grid)
    src, dst = 0, grid.n_nodes - 1
    path = router.path(src, dst)
    assert grid.seg_from[path[0]] == src
    assert grid.seg_to[path[-1]] == dst
    assert all(grid.seg_to[a] == grid.seg_from[b] for a, b in itertools.pairwise(path))
    times, _ = router.paths_from(src)
    assert grid.seg_free_flow_s[path].sum() == pytest.approx(times[dst])


def test_reverse_search_gives_the_same_times(grid):
    router = Router(grid)
    target = grid.n_nodes // 2
    to_target, successors = router.times_to(target)
    for source in (0, 3, grid.n_nodes - 1):
        forward, _ = router.paths_from(source)
        assert to_target[source] == pytest.approx(forward[target])
        path = router.path_via_successors(successors, source, target)
        assert grid.seg_free_flow_s[path].sum() == pytest.approx(forward[target])


def test_one_way_rows_are_respected():
    pack = load.from_dict(synthetic.grid(oneway_rows=(0,)))
    router = Router(pack)
    west, east = pack.node_index["n00001"], pack.node_index["n00005"]
    eastward = router.path(west, east)
    westward = router.path(east, west)
    assert len(eastward) == 4  # straight along row 0
    assert len(westward) > 4  # must leave row 0 to come back
