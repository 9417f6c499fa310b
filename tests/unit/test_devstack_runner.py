"""`make run`'s supervisor (devstack/runner.py): a service that ends by itself stops the
twin, and the last line says which one and how (issue 17)."""

import os
import signal
import sys

import pytest

from casatwin.devstack.runner import OPERATOR, Ending, first_ending, run_services


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("simulator stopped (rc=0)", Ending("simulator", 0)),
        ("processor stopped (rc=-9)", Ending("processor", -9)),
        ("SIGINT received", Ending(OPERATOR, 0)),
        ("SIGTERM received", Ending(OPERATOR, 0)),
        ("dashboard started (pid=4242)", None),
        ("sending SIGTERM to dashboard (pid 4242)", None),
    ],
)
def test_honchos_lines_tell_who_stopped_first(line, expected):
    assert first_ending(line) == expected


@pytest.mark.parametrize(
    ("ending", "crashed", "exit_code", "how"),
    [
        (Ending(OPERATOR, 0), False, 0, "exit code 0"),
        (Ending("simulator", 0), False, 0, "exit code 0"),
        (Ending("processor", 1), True, 1, "exit code 1"),
        (Ending("processor", -9), True, 137, "killed by SIGKILL"),
        (Ending("processor", -100), True, 228, "killed by signal 100"),
    ],
)
def test_only_a_crash_makes_make_run_fail(ending, crashed, exit_code, how):
    assert (ending.crashed, ending.exit_code, ending.how()) == (crashed, exit_code, how)


def test_a_crash_is_the_last_thing_said(caplog):
    caplog.set_level("INFO", logger="casatwin.stack")
    Ending("processor", -9).report()
    [record] = caplog.records
    assert record.levelname == "ERROR"
    assert record.getMessage() == "a service crashed, so the whole twin stopped"
    assert record.casatwin_fields["service"] == "processor"
    assert record.casatwin_fields["how"] == "killed by SIGKILL"


def test_nothing_more_is_said_when_the_operator_stopped_it(caplog):
    caplog.set_level("INFO", logger="casatwin.stack")
    Ending(OPERATOR, 0).report()
    assert caplog.records == []


def test_a_crashing_service_stops_the_others_and_is_named(capsys):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    waits = f"exec {sys.executable} -c 'import signal; signal.pause()'"  # until SIGTERM
    ending = run_services({"steady": waits, "crasher": "exit 3"}, dict(os.environ))
    assert ending == Ending("crasher", 3)
    assert ending.exit_code == 3
    out = capsys.readouterr().out
    assert "crasher stopped (rc=3)" in out and "steady stopped" in out
    # honcho's own Ctrl-C handlers do not outlive the run.
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
