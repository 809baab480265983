"""labctl: drive a shared performance lab."""

__version__ = "0.1.0"
