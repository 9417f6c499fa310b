"""CasaTwin: a real-time traffic digital twin of Casablanca."""

__version__ = "0.1.0"
