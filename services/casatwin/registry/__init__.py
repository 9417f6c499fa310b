"""The driver registry, the fines and points ledger, and their schema (MariaDB)."""
