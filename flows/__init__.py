"""Prefect flows: orchestration only; the work lives in ``universe`` and ``lab``."""
