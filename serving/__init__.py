"""Ray Serve prediction service: the active model of every strategy over HTTP.

Modules: ``serving.app`` (the Serve application, ``build_app`` for ``serve deploy``),
``serving.store`` (active models followed from the registry, hot-swapped), ``serving.rows``
(JSON rows -> model matrix, with the missing-value rule), ``serving.symbols`` (feature rows
of ``{symbols, as_of}`` requests via the trading engine's market snapshot), ``serving.client``
(``ServePredictionClient``, the trading engine's ``PredictionSource`` over HTTP).
Importing this package imports nothing heavy, so the client does not pull in Ray.
"""
