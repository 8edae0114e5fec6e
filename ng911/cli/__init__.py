"""The `ng911` console script."""
from ng911.cli.main import main

__all__ = ["main"]
