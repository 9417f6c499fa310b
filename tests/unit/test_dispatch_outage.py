"""The dispatcher's outage arithmetic (pure): which errors are an outage, where a batch
resumes, how long to wait."""

import MySQLdb
import pymongo.errors
import pytest

from casatwin.backoff import Backoff
from casatwin.dispatch import outage

INF, DIS = "casatwin.infractions", "casatwin.dispatch"


def test_a_batch_stopped_half_way_commits_what_was_handled_and_reads_the_rest_again():
    batch = [(INF, 0, 10), (INF, 1, 4), (DIS, 0, 7), (INF, 0, 11), (INF, 1, 5), (INF, 0, 12)]
    commit, again = outage.resume_points(batch, 3)
    assert commit == {(INF, 0): 11, (INF, 1): 5, (DIS, 0): 8}
    assert again == {(INF, 0): 11, (INF, 1): 5}  # partition 0 from 11, not 12: nothing skipped
    # Nothing handled: nothing committed, every partition read again from its first message.
    assert outage.resume_points(batch, 0) == ({}, {(INF, 0): 10, (INF, 1): 4, (DIS, 0): 7})
    # All handled: each partition committed after its last message.
    assert outage.resume_points(batch, len(batch)) == (
        {(INF, 0): 13, (INF, 1): 6, (DIS, 0): 8},
        {},
    )


@pytest.mark.parametrize(
    ("error", "store"),
    [
        (MySQLdb.OperationalError(2013, "Lost connection to server during query"), "MariaDB"),
        (MySQLdb.OperationalError(2003, "Can't connect to server on '127.0.0.1'"), "MariaDB"),
        (MySQLdb.OperationalError(2006, "Server has gone away"), "MariaDB"),
        (MySQLdb.OperationalError(1205, "Lock wait timeout exceeded"), "MariaDB"),
        (MySQLdb.InterfaceError(0, ""), "MariaDB"),
        (pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:1: refused"), outage.READ_MODEL),
        (pymongo.errors.AutoReconnect("connection closed"), outage.READ_MODEL),
    ],
)
def test_connection_errors_are_an_outage_of_their_store(error, store):
    down = outage.unavailable(error)
    assert down is not None and down.store == store
    assert down.reason  # said in the log line


@pytest.mark.parametrize(
    "error",
    [
        MySQLdb.ProgrammingError(1146, "Table 'casatwin.dispatch_assignments' doesn't exist"),
        MySQLdb.OperationalError(1054, "Unknown column 'x' in 'field list'"),
        MySQLdb.IntegrityError(1062, "Duplicate entry"),
        pymongo.errors.OperationFailure("bad query"),
        KeyError("status"),
    ],
)
def test_other_errors_are_not_waited_for(error):
    assert outage.unavailable(error) is None


def test_waits_grow_while_the_store_stays_away_and_start_again_after():
    state = outage.Outage(Backoff(0.5, 4.0))

    def top():  # the longest draw
        return 0.999

    delays = [state.failed(outage.MARIADB, 100.0 + i, top) for i in range(6)]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], rel=1e-3)
    assert state.failures == 6 and state.lasted(110.0) == 10.0
    state.end()
    assert state.lasted(200.0) == 0.0
    assert state.failed(outage.READ_MODEL, 300.0, top) == pytest.approx(0.5, rel=1e-3)
    assert state.store == outage.READ_MODEL and state.lasted(301.0) == 1.0
