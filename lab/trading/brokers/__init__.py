"""Real brokers behind ``BrokerInterface``, chosen by ``execution.broker`` in the config.

The paper executor (``lab.trading.paper``) is built by the trading cycle from the lab's own
books; a real broker class provides ``from_settings(settings, config)`` and is found here.
"""

from __future__ import annotations

import importlib

from lab.config import TradingConfig
from lab.errors import ConfigError
from lab.settings import Settings
from lab.trading.broker import BrokerInterface

__all__ = ["REAL_BROKERS", "open_real_broker"]

#: execution.broker -> "module:Class" (imported on use, so their HTTP stacks load lazily)
REAL_BROKERS = {
    "alpaca": "lab.trading.brokers.alpaca:AlpacaBroker",
    "binance": "lab.trading.brokers.binance:BinanceBroker",
}


def open_real_broker(settings: Settings, config: TradingConfig, *, live: bool = False,
                     base_url: str | None = None) -> BrokerInterface:
    """The configured real broker: its paper account unless ``execution.live: true`` AND
    ``live`` (the CLI's ``--live``); ``base_url`` points it elsewhere (a mirror, a test fake)."""
    target = REAL_BROKERS.get(config.execution.broker)
    if target is None:
        raise ConfigError([f"execution.broker: {config.execution.broker!r} is not a real broker "
                           f"(known: {', '.join(sorted(REAL_BROKERS))})"])
    module_name, class_name = target.split(":")
    broker_class = getattr(importlib.import_module(module_name), class_name)
    return broker_class.from_settings(settings, config, live=live, base_url=base_url)
