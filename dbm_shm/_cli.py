"""The ``dbm-shm`` tool moved to the package :mod:`dbm_shm.cli`; this name
stays for code that ran ``from dbm_shm._cli import main``."""

from .cli import build_parser, main

__all__ = ["build_parser", "main"]
