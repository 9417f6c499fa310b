import numpy as np
import pytest

from casatwin.city import geometry as g


def test_haversine_of_a_known_distance():
    # Place Mohammed V to the Hassan II Mosque is about 2.6 km as the crow flies.
    d = g.haversine_m(33.5928, -7.6186, 33.6083, -7.6325)
    assert 2000 < d < 2400


def test_bearing_cardinal_directions():
    assert g.bearing_deg(33.5, -7.6, 33.6, -7.6) == pytest.approx(0, abs=1e-6)
    assert g.bearing_deg(33.5, -7.6, 33.5, -7.5) == pytest.approx(90, abs=0.1)
    assert g.bearing_deg(33.6, -7.6, 33.5, -7.6) == pytest.approx(180, abs=1e-6)
    assert g.bearing_deg(33.5, -7.5, 33.5, -7.6) == pytest.approx(270, abs=0.1)


def test_angle_diff_wraps():
    assert g.angle_diff_deg(350, 10) == 20
    assert g.angle_diff_deg(10, 350) == 20
    assert g.angle_diff_deg(0, 180) == 180


def test_projection_round_trip_and_scale():
    proj = g.LocalProjection(33.58, -7.62)
    x, y = proj.to_xy(33.59, -7.60)
    lat, lon = proj.to_latlon(x, y)
    assert (lat, lon) == pytest.approx((33.59, -7.60), abs=1e-9)
    # Plane distance agrees with the great circle to better than 0.1 % over a few km.
    assert np.hypot(x, y) == pytest.approx(g.haversine_m(33.58, -7.62, 33.59, -7.60), rel=1e-3)


def test_heading_from_xy():
    assert g.heading_from_xy(0, 1) == 0
    assert g.heading_from_xy(1, 0) == 90
    assert g.heading_from_xy(-1, 0) == 270


def test_projection_on_segments_clamps():
    t, d = g.project_on_segments([5, -5, 15], [3, 0, 0], 0, 0, 10, 0)
    assert list(t) == [0.5, 0.0, 1.0]
    assert list(d) == [3.0, 5.0, 5.0]


def test_points_in_polygon_square_and_concave():
    square_x, square_y = [0, 10, 10, 0], [0, 0, 10, 10]
    inside = g.points_in_polygon([5, 11, -1, 9.9], [5, 5, 5, 0.1], square_x, square_y)
    assert list(inside) == [True, False, False, True]
    # A "U": the notch is outside.
    ux, uy = [0, 10, 10, 7, 7, 3, 3, 0], [0, 0, 10, 10, 3, 3, 10, 10]
    assert list(g.points_in_polygon([5, 5, 1.5], [6, 1, 8], ux, uy)) == [False, True, True]


def test_polygon_simplicity_and_area():
    assert g.polygon_is_simple([0, 10, 10, 0], [0, 0, 10, 10])
    assert not g.polygon_is_simple([0, 10, 0, 10], [0, 10, 10, 0])  # a bow tie
    assert g.polygon_area_m2([0, 10, 10, 0], [0, 0, 10, 10]) == 100
