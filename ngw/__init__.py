"""`ngw`, the gateway's command line (see `ngw --help` and the README)."""

__version__ = "1.0.0"
