"""The highway feed gateway and the fake traffic-management API it is tested against.

The gateway polls an external traffic-management centre that serves detector-station data
as TMDD XML, turns each station's report into a ``casatwin.sensors.highway`` reading and
publishes it, surviving a flaky API (circuit breaker, backoff with jitter, bounded timeout),
hostile documents (hardened parser, DLQ) and retries (no reading published twice).

Pure pieces: :mod:`tmdd` (the document), :mod:`normalise` (report → reading),
:mod:`breaker` (with :mod:`casatwin.backoff`, shared with the dispatcher), :mod:`dedupe`,
:mod:`traffic` and :mod:`faults` (the fake's detector values and fault modes). I/O edges:
:mod:`fetch`, :mod:`service` (the gateway's lifecycle) and :mod:`fakeapi` (the fake's HTTP
server). See docs/gateway.md.
"""
