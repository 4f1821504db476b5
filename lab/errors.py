"""Exceptions the lab raises on purpose.

Hierarchy::

    LabError                      anything the lab reports as a clear, user-facing error
    ├── ConfigError               config/trading.json or settings are invalid (lists every problem)
    ├── DatabaseUnavailable       the database URL cannot be reached
    ├── RegistryError             model registry misuse
    │   ├── UnknownVersion        a version id that does not exist
    │   ├── UnknownStrategy       a domain/strategy with no versions
    │   └── ModelFileError        a model file is missing or does not match its hash
    ├── DataError                 market data is missing, malformed or rejected
    │   └── ProviderError         a provider failed (throttled, bad key, unknown symbol, ...)
    └── TradingError              an order or trading cycle cannot proceed

The CLI prints ``str(error)`` for a LabError and exits non-zero, with no traceback.
"""

from __future__ import annotations

__all__ = [
    "LabError",
    "ConfigError",
    "DatabaseUnavailable",
    "RegistryError",
    "UnknownVersion",
    "UnknownStrategy",
    "ModelFileError",
    "DataError",
    "ProviderError",
    "TradingError",
]


class LabError(Exception):
    """Base of every error the lab raises deliberately."""


class ConfigError(LabError):
    """Invalid configuration; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class DatabaseUnavailable(LabError):
    """The configured database cannot be reached."""


class RegistryError(LabError):
    """Model registry misuse."""


class UnknownVersion(RegistryError):
    """A model version id that does not exist."""


class UnknownStrategy(RegistryError):
    """A (domain, strategy) with no registered versions."""


class ModelFileError(RegistryError):
    """A model file is missing or its bytes do not match the stored hash."""


class DataError(LabError):
    """Market data is missing, malformed or rejected."""


class ProviderError(DataError):
    """A market-data provider failed; ``retryable`` says whether trying again may help."""

    def __init__(self, provider: str, message: str, *, retryable: bool = False):
        self.provider = provider
        self.retryable = retryable
        self.detail = message  # without the provider's name
        super().__init__(f"{provider}: {message}")


class TradingError(LabError):
    """An order or trading cycle cannot proceed."""
