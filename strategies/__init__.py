"""One module per strategy; each declares a ``lab.strategy.Strategy`` subclass."""
