"""The `codescaler` command line: thin commands over the library (which never imports this)."""

from .app import app, main

__all__ = ["app", "main"]
