"""The load test's report: Locust's statistics CSV read into p50/p95/p99 rows."""

from __future__ import annotations

from casatwin.bus.messages import check
from loadtest.messages import infraction
from loadtest.run import hop_figures, read_stats, table

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def test_stats_rows_keep_the_percentiles(tmp_path):
    path = tmp_path / "locust_stats.csv"
    path.write_text(
        HEADER + "\n"
        "WS,infraction (event_ts → client),370,0,65,60,3,120,900,19.5,0,65,70,75,78,83,87,90,94,"
        "110,120,120\n"
        ",Aggregated,694,2,50,40,1,520,600,36.5,0.1,50,60,66,70,80,86,120,150,500,520,520\n"
    )
    rows = read_stats(path)
    assert rows[0] == {
        "type": "WS", "name": "infraction (event_ts → client)", "requests": 370, "failures": 0,
        "per_s": 19.5, "p50_ms": 65.0, "p95_ms": 87.0, "p99_ms": 94.0,
    }  # fmt: skip
    assert rows[1]["failures"] == 2
    assert "infraction (event_ts → client)" in table(rows)


def test_published_infractions_keep_the_contract():
    check("casatwin.infractions", infraction(1_700_000_000_000))


def test_hop_quantiles_interpolate_in_the_buckets():
    page = "\n".join(
        f'casatwin_hop_seconds_bucket{{hop="event_to_dashboard",le="{le}"}} {n}'
        for le, n in (("0.1", 50), ("0.2", 100), ("+Inf", 100))
    )
    page = "# TYPE casatwin_hop_seconds histogram\n" + page + "\n"
    figures = hop_figures(page, "event_to_dashboard")
    assert figures == {"count": 100.0, "p50_ms": 100.0, "p95_ms": 190.0, "p99_ms": 198.0}
    assert hop_figures(page, "other")["p95_ms"] is None
