"""Every SQL query of every board runs on real PostgreSQL filled with a lab history, with its
variables and macros expanded the way Grafana does, and returns what its panel needs."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from numbers import Number

import pandas as pd
import pytest
from sqlalchemy import text

from lab.dashboards import build_dashboards
from lab.dashboards.queries import panel_queries, render_sql, variable_queries
from lab.db import connect
from tests.fakes.trading import PAYOFF
from tests.observability_seed import seed_lab

BOARDS = build_dashboards()
CANDLE_COLUMNS = {"time", "open", "high", "low", "close", "volume"}
# The columns the issue names for its tables.
TABLE_COLUMNS = {
    ("lab-positions", "Open positions"): {"symbol", "quantity", "entry", "current_price", "pnl", "strategy",
                                          "stop_loss", "take_profit"},
    ("lab-trades", "Fills"): {"time", "strategy", "symbol", "side", "qty", "price", "fee", "realized_pnl"},
    ("lab-signals", "Current signals (latest cycle, before execution)"): {"confidence", "ev", "rr", "symbol",
                                                                          "strategy", "side"},
    ("lab-research", "Promotion history"): {"time", "strategy", "version", "action", "reason"},
}


@pytest.fixture
def seeded(pg_url: str):
    engine = connect(pg_url)
    return engine, seed_lab(engine)


def _values(engine, board: dict, start, end) -> dict[str, list[str]]:
    """Variable values as Grafana would offer them: each variable's own query, in order."""
    values: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for name, query, multi in variable_queries(board):
            options = [str(row[0]) for row in conn.execute(text(render_sql(query, values, start, end)))]
            assert options, f"variable {name} of {board['uid']} offers no values"
            values[name] = options if multi else options[:1]
    return values


def _check_columns(query, columns: list[str], rows: list) -> None:
    where = f"{query.board} / {query.panel}"
    assert rows, f"{where}: no rows"
    assert len(set(columns)) == len(columns), f"{where}: duplicate columns {columns}"
    if query.panel_type == "candlestick":
        assert CANDLE_COLUMNS <= set(columns), f"{where}: candlestick needs {CANDLE_COLUMNS}, got {columns}"
    elif query.panel_type in {"timeseries", "stat"} and query.fmt == "time_series":
        assert columns[0] == "time", f"{where}: time series must start with a time column, got {columns}"
        value_columns = [i for i, c in enumerate(columns) if c not in {"time", "metric"}]
        assert value_columns, f"{where}: no value column"
        assert any(isinstance(row[i], Number) for row in rows for i in value_columns), \
            f"{where}: every value is NULL"
    required = TABLE_COLUMNS.get((query.board, query.panel), set())
    assert required <= set(columns), f"{where}: missing {required - set(columns)}"


@pytest.mark.postgres
@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_every_sql_query_of_the_board_returns_rows_with_the_panel_columns(seeded, uid: str) -> None:
    engine, history = seeded
    board = BOARDS[uid]
    start, end = history.start - timedelta(days=1), history.end + timedelta(days=1)
    values = _values(engine, board, start, end)
    queries = [q for q in panel_queries(board) if q.datasource == "grafana-postgresql-datasource"]
    assert queries, f"{uid} has no SQL panels"
    with engine.connect() as conn:
        for query in queries:
            rendered = render_sql(query.text, values, start, end)
            assert not re.search(r"\$\w", rendered), f"unexpanded variable or macro in {rendered}"
            result = conn.execute(text(rendered))
            _check_columns(query, list(result.keys()), result.all())


def test_macros_and_variables_expand_like_grafana() -> None:
    from datetime import UTC, datetime

    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    sql = ("SELECT $__timeGroupAlias(ts, '1d') FROM t WHERE $__timeFilter(ts) AND a IN (${s:sqlstring}) "
           "AND b = '${p}' AND c > $__timeFrom()")
    assert render_sql(sql, {"s": ["x", "o'k"], "p": ["paper"]}, start, end) == (
        "SELECT floor(extract(epoch from ts)/86400)*86400 AS \"time\" FROM t WHERE ts BETWEEN "
        "'2025-01-01T00:00:00+00:00' AND '2025-02-01T00:00:00+00:00' AND a IN ('x','o''k') "
        "AND b = 'paper' AND c > '2025-01-01T00:00:00+00:00'")


@pytest.mark.postgres
def test_price_fill_markers_are_the_chosen_portfolios_fills(seeded) -> None:
    """A backtest that bought the same symbol on the same day at another price does not move
    the paper portfolio's buy marker."""
    from sqlalchemy import select

    from lab.db import session_scope
    from lab.db.models import Order, Trade

    engine, _ = seeded
    with session_scope(engine) as s:
        paper = s.scalars(select(Trade).where(Trade.portfolio == "paper", Trade.side == "buy")
                          .order_by(Trade.id).limit(1)).one()
        symbol, ts, price = paper.symbol, paper.ts, paper.price
        order = Order(client_order_id="bt-1", portfolio="backtest:1", strategy="momentum", symbol=symbol,
                      asset_type="stocks", side="buy", order_type="market", qty=1, status="filled")
        s.add(order)
        s.flush()
        s.add(Trade(fill_id="bt-1-1", order_id=order.id, portfolio="backtest:1", strategy="momentum",
                    symbol=symbol, side="buy", qty=1, price=price * 2, fee=0, realized_pnl=0, ts=ts))
    [candles] = [q for q in panel_queries(BOARDS["lab-prices"]) if q.panel_type == "candlestick"]

    def buy_markers(portfolio: str) -> list[float]:
        values = {"interval": ["1d"], "symbol": [symbol], "portfolio": [portfolio]}
        with engine.connect() as conn:
            rows = conn.execute(text(render_sql(candles.text, values, ts - timedelta(days=1),
                                                ts + timedelta(days=1)))).mappings().all()
        return [row["buy_fill"] for row in rows if row["buy_fill"] is not None]

    assert buy_markers("paper") == [pytest.approx(price)]
    assert buy_markers("backtest:1") == [pytest.approx(price * 2)]


@pytest.mark.postgres
def test_the_benchmark_line_starts_at_the_first_stored_benchmark_close(pg_url: str) -> None:
    """A run whose first bar has no benchmark close still draws its benchmark, from the first
    close there is, at the portfolio's starting value."""
    from datetime import UTC, datetime

    from lab.db import session_scope
    from lab.db.models import PortfolioSnapshot

    engine = connect(pg_url)
    days = [datetime(2019, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    with session_scope(engine) as s:
        for ts, equity, close in zip(days, (1000.0, 1000.0, 1050.0), (None, 100.0, 110.0), strict=True):
            s.add(PortfolioSnapshot(portfolio="backtest:1", ts=ts, cash=equity, positions_value=0.0, equity=equity,
                                    realized_pnl=0.0, unrealized_pnl=0.0, peak_equity=equity, drawdown=0.0,
                                    benchmark_close=close))
    [curve] = [q for q in panel_queries(BOARDS["lab-portfolio"]) if q.panel.startswith("Equity against")]
    with engine.connect() as conn:
        rows = conn.execute(text(render_sql(curve.text, {"portfolio": ["backtest:1"]}, days[0], days[-1]))).all()
    assert [row[2] for row in rows] == [None, pytest.approx(1000.0), pytest.approx(1100.0)]


@pytest.mark.postgres
def test_an_open_short_that_gained_shows_a_positive_pnl_and_percentage(pg_url: str) -> None:
    from datetime import UTC, datetime

    from lab.db import session_scope
    from lab.db.models import Position

    engine = connect(pg_url)
    with session_scope(engine) as s:  # sold 10 at 100, now at 90
        s.add(Position(portfolio="paper", strategy="pairs", symbol="KO", asset_type="stocks", qty=-10.0,
                       avg_price=100.0, last_price=90.0, opened_at=datetime(2025, 1, 2, tzinfo=UTC)))
    [table] = [q for q in panel_queries(BOARDS["lab-positions"]) if q.panel == "Open positions"]
    now = datetime.now(UTC)
    with engine.connect() as conn:
        row = conn.execute(text(render_sql(table.text, {"portfolio": ["paper"]}, now - timedelta(days=1), now))
                           ).mappings().one()
    assert (row["pnl"], row["pnl_pct"]) == (pytest.approx(100.0), pytest.approx(0.10))


@pytest.mark.postgres
@pytest.mark.slow
def test_portfolio_board_runs_on_a_database_filled_by_real_ingestion_and_trading_cycles(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own writers (offline ingestion, paper cycles) produce what the board reads."""
    import numpy as np

    from lab.runtime import open_lab
    from lab.trading.cycle import run_trading_cycle
    from lab.trading.predictions import Prediction
    from universe.ingest import ingest_universe

    class Confident:
        def predict(self, strategy, rows):
            return Prediction(values=np.full(len(rows), 0.8), model_version=1, payoff=PAYOFF)

    monkeypatch.setenv("LAB_DATABASE_URL", pg_url)
    ctx = open_lab()
    ingest_universe(ctx, symbols=["AAPL", "MSFT"])
    with ctx.engine.connect() as conn:
        days = [row[0] for row in conn.execute(text(
            "SELECT DISTINCT ts FROM price_history WHERE symbol = 'AAPL' ORDER BY ts DESC LIMIT 5"))][::-1]
    for day in days:
        run_trading_cycle(ctx, day + timedelta(hours=21), predictions=Confident())
    board = BOARDS["lab-portfolio"]
    start, end = days[0] - timedelta(days=1), days[-1] + timedelta(days=2)
    values = _values(ctx.engine, board, start, end)
    with ctx.engine.connect() as conn:
        for query in (q for q in panel_queries(board) if q.datasource == "grafana-postgresql-datasource"):
            result = conn.execute(text(render_sql(query.text, values, start, end)))
            _check_columns(query, list(result.keys()), result.all())


@pytest.mark.postgres
@pytest.mark.slow
def test_every_board_runs_on_a_database_filled_by_the_real_pipeline(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, ray_session, tmp_path) -> None:
    """Offline ingestion (plus one symbol no provider has), features and indicators, a real
    tuning run through the registry, and paper cycles: the engine's own writers fill every
    table the boards read."""
    import json
    from datetime import UTC, datetime

    import numpy as np

    from lab.featurestore import refresh_universe_features
    from lab.models.pipeline import train_and_promote_all
    from lab.runtime import open_lab
    from lab.trading.cycle import run_trading_cycle
    from lab.trading.predictions import Prediction
    from universe.ingest import ingest_universe

    class Confident:
        def predict(self, strategy, rows):
            return Prediction(values=np.full(len(rows), 0.8), model_version=1, payoff=PAYOFF)

    raw = json.loads(open(open_lab().settings.lab_config).read())
    raw["universe"]["stocks"]["symbols"].append("ZZZZ")  # in no offline package: a reported failure
    raw["tuning"] |= {"trials": 1, "folds": 2}
    path = tmp_path / "trading.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("LAB_CONFIG", str(path))
    monkeypatch.setenv("LAB_DATABASE_URL", pg_url)
    ctx = open_lab()
    summary = ingest_universe(ctx)
    assert [r.symbol for r in summary.failed] == ["ZZZZ"]
    refresh_universe_features(ctx, use_ray=False)
    with ctx.engine.connect() as conn:
        days = [row[0] for row in conn.execute(text(
            "SELECT DISTINCT ts FROM price_history WHERE symbol = 'AAPL' ORDER BY ts DESC LIMIT 30"))][::-1]
    for day in days:
        run_trading_cycle(ctx, day + timedelta(hours=15), predictions=Confident())  # NYSE open

    def crash(stage: str) -> None:
        if stage == "signals_stored":
            raise RuntimeError("killed mid-cycle")

    with pytest.raises(RuntimeError):  # a cycle that never completes, for the flow-failures panel
        run_trading_cycle(ctx, days[-1] + timedelta(days=1, hours=15), predictions=Confident(), hook=crash)
    outcome = train_and_promote_all(ctx, ["momentum"], trials=1)
    assert outcome[0].error is None, outcome[0].error
    if not outcome[0].decision.promoted:  # the gate kept it: an operator activates it by hand
        ctx.registry.activate(ctx.registry.list_versions("trading", "momentum")[-1].id, reason="operator")
    # the boards' time range spans the market history and today (ingestion and tuning ran now)
    start, end = days[0] - timedelta(days=400), datetime.now(UTC) + timedelta(days=1)
    failures = []
    for _uid, board in sorted(BOARDS.items()):
        values = _values(ctx.engine, board, start, end)
        with ctx.engine.connect() as conn:
            for query in (q for q in panel_queries(board) if q.datasource == "grafana-postgresql-datasource"):
                result = conn.execute(text(render_sql(query.text, values, start, end)))
                try:
                    _check_columns(query, list(result.keys()), result.all())
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0])
    assert not failures, failures


@pytest.mark.postgres
@pytest.mark.parametrize("run", ["pairs", "sma_cross"])
def test_strategy_summary_counts_trades_and_pnl_as_the_backtest_report_does(pg_url: str, shared_data, run: str) -> None:
    """A stored backtest read through the board: trades are round trips (a pair's two legs one
    trade), P&L is counted net of fees once, as ``BacktestResult.metrics`` counts them."""
    from benchmarks.backtest import lab_sma, load
    from lab.backtest import save_result
    from tests.test_backtest_pairs import run_pairs

    if run == "pairs":
        result = run_pairs(shared_data, "shared")
    else:
        bars = {s: load(s, shared_data / "stocks").loc["2016-01-01":"2018-12-31"] for s in ("MSFT", "KO")}
        result = lab_sma(bars, {"method": "fixed", "fixed_amount": 20_000.0}, accounts="shared")
    engine = connect(pg_url)
    save_result(engine, result)
    [summary] = [q for q in panel_queries(BOARDS["lab-strategy"]) if q.panel == "Summary"]
    start, end = result.start.to_pydatetime() - timedelta(days=1), result.end.to_pydatetime() + timedelta(days=1)
    with engine.connect() as conn:
        rows = conn.execute(text(render_sql(summary.text, {"portfolio": [result.portfolio], "strategy": [run]},
                                            start, end))).mappings().all()
    [row] = rows
    metrics = result.metrics()[run]
    assert row["closed_trades"] == metrics.trades > 0
    assert row["win_rate"] == pytest.approx(metrics.win_rate, rel=1e-12)
    realized = result.fills.loc[result.fills["strategy"] == run, "realized_pnl"].sum()
    assert row["roi"] == pytest.approx(realized / result.initial_cash, rel=1e-9)
    # Sharpe over every calendar day of the range (none traded is a 0 return), annualized as such
    days = pd.date_range(pd.Timestamp(start).floor("D"), pd.Timestamp(end).floor("D"), freq="D")
    fills = result.fills[result.fills["strategy"] == run]
    daily = (fills.groupby(fills["ts"].dt.floor("D"))["realized_pnl"].sum().reindex(days, fill_value=0.0)
             / result.initial_cash)
    assert row["sharpe"] == pytest.approx(daily.mean() / daily.std() * math.sqrt(365), rel=1e-9)
    [cumulative] = [q for q in panel_queries(BOARDS["lab-trades"]) if q.panel.startswith("Cumulative realized")]
    symbols = sorted(set(result.fills["symbol"]))
    with engine.connect() as conn:
        curve = conn.execute(text(render_sql(cumulative.text, {"portfolio": [result.portfolio], "strategy": [run],
                                                               "symbol": symbols}, start, end))).all()
    assert curve[-1][1] == pytest.approx(realized, rel=1e-9)
