"""Cross-check against a peer: a plain SMA crossover through the lab engine and through
backtesting.py on the same real bars, with the same assumptions configured on both sides
(fill at the next open, a fixed commission rate, no slippage), gives the same trades and
the same final equity within 1e-6 relative. The peer runner and the lab's configuration
live in ``benchmarks/backtest.py``, so the benchmark times exactly what is checked here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.backtest import FIXED, lab_sma, load, peer_backtest, signals


def _run_both(shared_data, symbol: str, sizing: dict, peer_size):
    bars = load(symbol, shared_data / "stocks").loc["2011-01-01":"2020-12-31"]
    entries, exits = signals(bars["close"])
    lab = lab_sma({symbol: bars}, sizing, accounts="shared")
    return lab, peer_backtest(bars, entries, exits, peer_size)


def _assert_same_trades(lab, peer) -> None:
    trades = peer._trades
    assert len(trades) > 20
    buys, sells = lab.fills[lab.fills["side"] == "buy"], lab.fills[lab.fills["side"] == "sell"]
    closed = np.column_stack([buys["qty"].to_numpy()[:len(sells)], buys["price"].to_numpy()[:len(sells)],
                              sells["price"].to_numpy()])
    np.testing.assert_allclose(closed, trades[["Size", "EntryPrice", "ExitPrice"]].to_numpy(dtype=float),
                               rtol=1e-12)
    assert list(buys["ts"].iloc[:len(trades)]) == list(pd.DatetimeIndex(trades["EntryTime"]).tz_localize("UTC"))
    assert list(sells["ts"]) == list(pd.DatetimeIndex(trades["ExitTime"]).tz_localize("UTC"))
    assert lab.equity["equity"].iloc[-1] == pytest.approx(peer["Equity Final [$]"], rel=1e-6)


@pytest.mark.parametrize("symbol", ["KO", "AAPL"])
def test_sma_crossover_matches_backtesting_py_with_fixed_amount_sizing(shared_data, symbol):
    lab, peer = _run_both(shared_data, symbol, {"method": "fixed", "fixed_amount": FIXED},
                          lambda close: int(FIXED // close))
    _assert_same_trades(lab, peer)
    np.testing.assert_allclose(lab.equity["equity"].to_numpy(), peer._equity_curve["Equity"].to_numpy(),
                               rtol=1e-9)


@pytest.mark.parametrize("symbol", ["KO", "AAPL"])
def test_sma_crossover_matches_backtesting_py_all_in(shared_data, symbol):
    """All-in: the whole cash as a cash-sized order whose quantity is resolved at the fill
    (next) open, as backtesting.py sizes ``buy(size=<fraction>)``."""
    lab, peer = _run_both(shared_data, symbol, {"method": "all_in", "all_in_fraction": 1.0},
                          lambda close: 1 - 1e-12)
    _assert_same_trades(lab, peer)
