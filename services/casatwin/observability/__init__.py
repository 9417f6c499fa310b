"""Observability: the metric families the services export and their catalogue."""
