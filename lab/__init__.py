"""Strategy lab: from a universe of symbols to tuned, versioned, paper-traded models."""

__version__ = "0.1.0"
