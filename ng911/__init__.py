"""ng911: an NG9-1-1 emergency call controller (RFC 3725 third-party call control on Twisted)."""

__version__ = "0.1.0"
