"""The read model (MongoDB): denormalised documents for the dashboard's history views."""
