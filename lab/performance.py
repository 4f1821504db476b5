"""Performance metrics of an equity curve and its fills, and the plan's success gate.

One set of definitions for every place that reports a result (backtests, the report, the
paper account), so a Sharpe ratio means the same number everywhere. The return-based
figures follow empyrical's conventions (sample standard deviation, CAGR over
``len(returns) / periods_per_year`` years, Sortino against a zero target) and the tests
check them against empyrical-reloaded. Drawdowns are reported as positive fractions.

Trade statistics count *round trips*: per (strategy, symbol), the fills from a flat
position back to flat. Their P&L is net of every fee paid along the way, so a win rate is
never flattered by leaving costs out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

__all__ = [
    "PERCENT_FIGURES",
    "GateCheck",
    "Metrics",
    "SuccessGate",
    "buy_and_hold",
    "compute_metrics",
    "drawdown",
    "monthly_returns",
    "monthly_series",
    "returns_of",
    "round_trips",
]

#: the ``Metrics`` (and gate checks) that are fractions: every table shows them in percent
PERCENT_FIGURES = frozenset({"total_return", "cagr", "volatility", "max_drawdown", "win_rate", "time_in_market",
                             "avg_gross_exposure", "positive_months"})

#: fills columns used by ``round_trips``
FILL_COLUMNS = ["ts", "strategy", "symbol", "side", "qty", "price", "fee"]


@dataclass(frozen=True)
class Metrics:
    """Every figure a result is judged by; NaN where the input cannot define it."""

    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_days: int
    trades: int
    win_rate: float
    profit_factor: float
    avg_win: float
    avg_loss: float
    time_in_market: float  # the share of bars with any position open
    avg_gross_exposure: float  # the mean over the bars of the open positions' gross value / equity
    turnover: float
    positive_months: float
    months: int

    def as_dict(self) -> dict[str, float | int | str | None]:
        """JSON-safe: NaN (undefined) becomes None, an infinity "inf" or "-inf" (a profit
        factor without a losing trade is infinite, and passes the gate: it must come back so)."""
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None if math.isnan(v) else str(v))
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, float | int | str | None]) -> Metrics:
        """``as_dict`` read back; a run stored before time in market was named so holds it as
        "exposure" (and no gross exposure: NaN)."""
        def value(v: float | int | str | None) -> float | int:
            return math.nan if v is None else float(v) if isinstance(v, str) else v

        if "time_in_market" not in values and "exposure" in values:
            values = values | {"time_in_market": values["exposure"]}
        return cls(**{f.name: value(values.get(f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    op: str
    threshold: float
    passed: bool

    def describe(self) -> str:
        return f"{self.name} {self.value:.4g} {self.op} {self.threshold:.4g}: {'PASS' if self.passed else 'FAIL'}"


@dataclass(frozen=True, kw_only=True)
class SuccessGate:
    """The plan's success criteria. Fixed up front, never tuned on the test period.

    "Consistently positive months" is read as: at least ``min_positive_months`` of the
    calendar months in the period have a positive return. Two more checks say whether there
    is enough to judge by: a win rate and a profit factor over a handful of trades, or
    "consistent" months over two, pass by luck as often as not, so a run needs
    ``min_trades`` round trips and ``min_months`` whole months from its first bar to its last
    (the calendar months it touches would let a 124-day run from late January count six).
    """

    min_sharpe: float = 1.0
    min_win_rate: float = 0.5
    min_profit_factor: float = 1.5
    max_drawdown: float = 0.15
    min_positive_months: float = 0.6
    min_trades: int = 30
    min_months: int = 6

    def evaluate(self, metrics: Metrics) -> list[GateCheck]:
        def above(name: str, value: float, threshold: float) -> GateCheck:
            # a profit factor without a losing trade is +inf: above any bar; NaN (no trades) is not
            return GateCheck(name, value, ">", threshold, bool(not np.isnan(value) and value > threshold))

        def at_least(name: str, value: float, threshold: float) -> GateCheck:
            return GateCheck(name, value, ">=", threshold, bool(np.isfinite(value) and value >= threshold))

        return [
            above("sharpe", metrics.sharpe, self.min_sharpe),
            above("win_rate", metrics.win_rate, self.min_win_rate),
            above("profit_factor", metrics.profit_factor, self.min_profit_factor),
            GateCheck("max_drawdown", metrics.max_drawdown, "<", self.max_drawdown,
                      bool(np.isfinite(metrics.max_drawdown) and metrics.max_drawdown < self.max_drawdown)),
            at_least("positive_months", metrics.positive_months, self.min_positive_months),
            at_least("trades", metrics.trades, self.min_trades),
            at_least("months", metrics.months, self.min_months),
        ]


def returns_of(equity: pd.Series) -> pd.Series:
    """Simple period returns of an equity curve (the first bar has no return)."""
    return equity.astype(float).pct_change().iloc[1:]


def drawdown(equity: pd.Series) -> pd.Series:
    """Fraction below the running peak at each bar (0 at a new high, positive below it)."""
    equity = equity.astype(float)
    return 1.0 - equity / equity.cummax()


def _whole_months(index: pd.DatetimeIndex) -> int:
    """Whole months from the first stamp to the last (Jan 15 to Jul 14 is five, to Jul 15 six)."""
    if len(index) < 2:
        return 0
    first, last = index[0], index[-1]
    months = (last.year - first.year) * 12 + last.month - first.month
    return months - 1 if first + pd.DateOffset(months=months) > last else months


def _max_drawdown_days(dd: pd.Series) -> int:
    """Longest stretch, in calendar days, from a peak until equity first regains it."""
    if dd.empty:
        return 0
    underwater = dd.to_numpy() > 0
    index = pd.DatetimeIndex(dd.index)
    longest, start = 0, None
    for i, below in enumerate(underwater):
        if below and start is None:
            start = i - 1 if i > 0 else 0
        elif not below and start is not None:
            longest = max(longest, (index[i] - index[start]).days)
            start = None
    if start is not None:
        longest = max(longest, (index[-1] - index[start]).days)
    return int(longest)


def _annualized(returns: pd.Series, periods_per_year: int) -> tuple[float, float, float, float]:
    """(cagr, volatility, sharpe, sortino) with empyrical's conventions: a NaN return (a bar
    without a value, or 0/0 after ruin) is skipped, though its bar still counts as time; a
    CAGR needs one return, the dispersion figures two."""
    r = returns.to_numpy(dtype=float)
    if len(r) < 1:
        return (math.nan,) * 4  # type: ignore[return-value]
    valid = r[~np.isnan(r)]
    growth = float(np.prod(1.0 + valid))
    years = len(r) / periods_per_year
    cagr = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
    if len(r) < 2 or not len(valid):
        return cagr, math.nan, math.nan, math.nan
    std = float(np.std(valid, ddof=1)) if len(valid) > 1 else math.nan
    volatility = std * math.sqrt(periods_per_year)
    mean = float(np.mean(valid))
    sharpe = mean / std * math.sqrt(periods_per_year) if std > 0 else math.nan
    downside = math.sqrt(float(np.mean(np.minimum(valid, 0.0) ** 2))) * math.sqrt(periods_per_year)
    # no losing period: infinite when the mean is positive, as empyrical's sortino_ratio
    sortino = mean * periods_per_year / downside if downside > 0 else math.inf if mean > 0 else math.nan
    return cagr, volatility, sharpe, sortino


def monthly_series(equity: pd.Series) -> pd.Series:
    """The return of each calendar month, its bars' returns compounded (empyrical's
    ``aggregate_returns(..., "monthly")``), indexed by (year, month). The one definition of a
    month's figure for every curve: the portfolio, a strategy, buy-and-hold. The first bar has
    no return, so its month counts from its second bar."""
    returns = returns_of(equity)
    index = pd.DatetimeIndex(returns.index)
    return (1.0 + returns).groupby([index.year.rename("year"), index.month.rename("month")]).prod() - 1.0


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """``monthly_series`` as a calendar: rows are years, columns 1..12 (NaN where absent)."""
    monthly = monthly_series(equity)
    if monthly.empty:
        return pd.DataFrame(columns=range(1, 13), dtype=float)
    table = monthly.unstack()
    table.columns.name = "month"
    return table.reindex(columns=range(1, 13))


def round_trips(fills: pd.DataFrame) -> pd.DataFrame:
    """Closed round trips per (strategy, symbol): entry/exit time, net P&L (after all fees).

    A round trip starts when the position leaves zero and ends when it returns to zero;
    a position still open at the end is not a trade yet. The legs of a pair (fills with a
    ``pair``, "AAA/BBB") are one trade, from the first leg's entry until both are flat: a
    pair wins or loses as a whole, whatever each leg did.
    """
    columns = ["strategy", "symbol", "entry_ts", "exit_ts", "pnl", "fees", "notional"]
    if fills.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    ordered = fills.sort_values("ts", kind="stable")
    traded = ordered["pair"].fillna(ordered["symbol"]) if "pair" in ordered else ordered["symbol"]
    for (strategy, name), group in ordered.groupby([ordered["strategy"], traded.rename("traded")], sort=True):
        held: dict[str, float] = {}
        cash = fees = notional = 0.0
        entry_ts = None
        for ts, symbol, side, q, price, fee in group[["ts", "symbol", "side", "qty", "price", "fee"]].itertuples(
                index=False):
            signed = q if side == "buy" else -q
            if entry_ts is None:
                entry_ts = ts
            held[symbol] = held.get(symbol, 0.0) + signed
            cash -= signed * price + fee
            fees += fee
            notional += abs(q * price)
            if all(math.isclose(qty, 0.0, abs_tol=1e-9) for qty in held.values()):
                rows.append((strategy, name, entry_ts, ts, cash, fees, notional))
                held, cash, fees, notional, entry_ts = {}, 0.0, 0.0, 0.0, None
    return pd.DataFrame(rows, columns=columns)


def compute_metrics(
    equity: pd.Series,
    *,
    fills: pd.DataFrame | None = None,
    exposure: pd.Series | None = None,
    periods_per_year: int = 252,
) -> Metrics:
    """Metrics of one equity curve (indexed by tz-aware timestamps) and its fills.

    ``exposure`` is the gross value of open positions at each bar (same index as
    ``equity``). Two figures come of it, apart because they read very differently: time in
    market, the share of bars with any position open (a book holding 5% of its equity every
    day is in the market all the time), and the average gross exposure, that value over the
    equity averaged over the bars (bars without positive equity left out). Turnover is traded
    notional per year divided by average equity.
    """
    equity = equity.astype(float)
    returns = returns_of(equity)
    cagr, volatility, sharpe, sortino = _annualized(returns, periods_per_year)
    dd = drawdown(equity)
    fills = fills if fills is not None else pd.DataFrame(columns=FILL_COLUMNS)
    trips = round_trips(fills)
    pnl = trips["pnl"].astype(float)
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    gross_loss = -float(losses.sum())
    if trips.empty:
        profit_factor = math.nan
    else:
        profit_factor = float(wins.sum()) / gross_loss if gross_loss > 0 else math.inf
    years = max(len(returns), 1) / periods_per_year
    traded = float((fills["qty"].astype(float) * fills["price"].astype(float)).abs().sum()) if len(fills) else 0.0
    mean_equity = float(equity.mean()) if len(equity) else math.nan
    months = monthly_series(equity)
    held = exposure.astype(float).abs() if exposure is not None and len(exposure) else None
    return Metrics(
        total_return=float(equity.iloc[-1] / equity.iloc[0] - 1.0) if len(equity) else math.nan,
        cagr=cagr,
        volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(dd.max()) if len(dd) else math.nan,
        max_drawdown_days=_max_drawdown_days(dd),
        trades=len(trips),
        win_rate=float(len(wins) / len(trips)) if len(trips) else math.nan,
        profit_factor=profit_factor,
        avg_win=float(wins.mean()) if len(wins) else math.nan,
        avg_loss=float(losses.mean()) if len(losses) else math.nan,
        time_in_market=float((held > 0).mean()) if held is not None else math.nan,
        avg_gross_exposure=float((held / equity.where(equity > 0)).mean()) if held is not None else math.nan,
        turnover=traded / years / mean_equity if mean_equity and len(returns) else math.nan,
        positive_months=float((months > 0).mean()) if len(months) else math.nan,
        months=_whole_months(pd.DatetimeIndex(equity.index)),
    )


def buy_and_hold(closes: pd.Series, initial_cash: float) -> pd.Series:
    """Equity of putting ``initial_cash`` into the benchmark at the first close and holding it."""
    closes = closes.astype(float).dropna()
    return initial_cash * closes / closes.iloc[0]
