"""Trading engine: signals, portfolio and risk, execution (paper and real brokers), the cycle.

Import from the submodules (``lab.trading.model``, ``lab.trading.broker``, ...); this package
keeps its import light so brokers and the Serve client can use the model alone.
"""
