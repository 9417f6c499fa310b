"""Versioned SQL migrations applied in order by `casatwin db migrate`."""
