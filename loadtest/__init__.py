"""Locust load test of the dashboard (``make loadtest``)."""
