"""Loi 52-05 as data (the rule book) and the pure function that decides an infraction."""
