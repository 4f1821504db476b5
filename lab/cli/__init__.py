"""The ``lab`` command line (typer + rich)."""
