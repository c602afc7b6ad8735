"""The command line, a thin layer over `sweep.api`: `main` (`main.py`) parses the arguments
(`parser.py`) and runs one command (`commands.py`)."""

from .main import main

__all__ = ["main"]
