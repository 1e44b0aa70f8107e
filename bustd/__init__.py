"""bustd: a light PSI-aware out-of-memory killer."""

__version__ = "0.1.0"
