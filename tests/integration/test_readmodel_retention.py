"""Retention of the read model's infractions, against the real read-model server: older
than the retention before the newest infraction goes, at most once per period."""

from __future__ import annotations

import uuid

import pytest

from casatwin.config import MongoSettings
from casatwin.readmodel.store import DAY_MS, INFRACTIONS, Retention, connect, upsert_infractions

pytestmark = pytest.mark.integration

NEWEST = 1_800_000_000_000


def test_infractions_older_than_the_retention_leave_the_read_model(mongo):
    db = connect(MongoSettings(url=mongo.url, database=f"casatwin_{uuid.uuid4().hex[:8]}"))
    ages = (0, 30, 89, 91, 200)
    upsert_infractions(db, [{"infraction_id": f"inf-{d}", "event_ts": NEWEST - d * DAY_MS}
                            for d in ages])  # fmt: skip
    retention = Retention(INFRACTIONS, "event_ts", days=90, every_s=3600)

    assert retention.apply(db, NEWEST) == 2
    assert sorted(d["_id"] for d in db[INFRACTIONS].find({})) == ["inf-0", "inf-30", "inf-89"]
    # Not due again within the period: a write every micro-batch costs no delete.
    assert retention.apply(db, NEWEST + 10 * DAY_MS) == 0
    assert db[INFRACTIONS].count_documents({}) == 3
    assert Retention(INFRACTIONS, "event_ts", days=0).apply(db, NEWEST + 900 * DAY_MS) == 0
    db.client.drop_database(db.name)
