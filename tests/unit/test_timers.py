"""When the processor asks the infractions query for a batch for its timers."""

from casatwin.processor.timers import SilenceWatch

MOVED = {"eventTime": {"max": "2026-12-07T17:00:00.000Z", "watermark": "2026-12-07T16:59:30.000Z"}}
EMPTY = {"eventTime": {"watermark": "2026-12-07T16:59:30.000Z"}}


def batch(batch_id: int, event_time: dict) -> dict:
    return {"batchId": batch_id, **event_time}


def test_asks_once_after_the_silence_that_follows_a_batch_with_fixes():
    watch = SilenceWatch(silence_s=2.0)
    assert not watch.due(batch(7, MOVED), now=100.0)
    assert not watch.due(batch(7, MOVED), now=101.9)
    assert watch.due(batch(7, MOVED), now=102.0)
    assert not watch.due(batch(7, MOVED), now=110.0)  # asked already for this batch


def test_a_newer_batch_before_the_silence_ends_asks_for_nothing():
    watch = SilenceWatch(silence_s=2.0)
    watch.due(batch(7, MOVED), now=100.0)
    assert not watch.due(batch(8, MOVED), now=101.0)  # the fleet reports: its batch fires them
    assert not watch.due(batch(8, MOVED), now=102.5)
    assert watch.due(batch(8, MOVED), now=103.0)


def test_the_batch_asked_for_moves_no_watermark_so_nothing_more_is_asked():
    watch = SilenceWatch(silence_s=2.0)
    watch.due(batch(7, MOVED), now=100.0)
    assert watch.due(batch(7, MOVED), now=102.0)
    assert not watch.due(batch(8, EMPTY), now=102.5)
    assert not watch.due(batch(8, EMPTY), now=200.0)


def test_no_progress_yet_asks_for_nothing():
    assert not SilenceWatch(silence_s=2.0).due(None, now=100.0)
