"""Boards over the trading tables: portfolio, positions, trade history, strategy performance, signals.

History comes from PostgreSQL (snapshots, fills, signals); the live flags (halt, kill switch)
come from Prometheus, which scrapes the lab exporter.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.models import common as cm

from lab.dashboards._sdk import PG, PROM, portfolio_variable, promql, sql, sql_variable, value_text

__all__ = ["portfolio_overview", "positions", "trade_history", "strategy_performance", "signals"]

FILLS = "portfolio = '${portfolio}' AND strategy IN (${strategy:sqlstring}) AND symbol IN (${symbol:sqlstring})"


def _board(uid: str, title: str, *, time_from: str = "now-90d") -> gdb.Dashboard:
    return (gdb.Dashboard(title).uid(uid).tags(["strategy-lab"]).time(time_from, "now").refresh("1m")
            .timezone("utc").readonly())


def _last(title: str, raw_sql: str, unit: str) -> stat.Panel:
    return (stat.Panel().title(title).datasource(PG).with_target(sql(raw_sql, fmt="time_series"))
            .unit(unit).reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])).height(4).span(6))


def _flag(title: str, expr: str, on_text: str, *, legend: str = "__auto") -> stat.Panel:
    return (stat.Panel().title(title).datasource(PROM).with_target(promql(expr, legend=legend, instant=True))
            .mappings(value_text({"0": ("OK", "green"), "1": (on_text, "red")}))
            .color_mode(cm.BigValueColorMode.BACKGROUND).height(4).span(3))


def portfolio_overview() -> gdb.Dashboard:
    snap = "FROM portfolio WHERE portfolio = '${portfolio}' AND $__timeFilter(ts) ORDER BY ts"
    return (
        _board("lab-portfolio", "Lab / Portfolio overview")
        .with_variable(portfolio_variable())
        .with_panel(_last("Total value", f"SELECT ts AS time, equity AS value {snap}", "currencyUSD"))
        .with_panel(_last("Cash", f"SELECT ts AS time, cash AS value {snap}", "currencyUSD"))
        .with_panel(_last("P&L (realized + unrealized)",
                          f"SELECT ts AS time, realized_pnl + unrealized_pnl AS value {snap}", "currencyUSD"))
        .with_panel(_flag("Drawdown halt", 'max(lab_portfolio_halted{portfolio="$portfolio"})', "HALTED"))
        .with_panel(
            _flag("Kill switch", 'max by (engaged_by) (lab_kill_switch_engaged{portfolio="$portfolio"})', "ENGAGED",
                  legend="{{engaged_by}}")
            .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
            .description("ENGAGED by the portfolio's own switch or by * (every account), named under it; "
                         "`lab kill-switch status` shows the reasons."))
        # the benchmark is scaled by its first stored close, not by the first row's: a run whose
        # first bar had none (NULL) would have no benchmark at all ("closes" puts NULLs last)
        .with_panel(
            timeseries.Panel().title("Equity against the benchmark (buy and hold, same starting value)")
            .datasource(PG).unit("currencyUSD").height(10).span(24)
            .with_target(sql("""
                SELECT ts AS time, equity AS "Portfolio",
                       benchmark_close * first_value(equity) OVER w
                         / NULLIF(first_value(benchmark_close) OVER closes, 0) AS "Benchmark"
                FROM portfolio WHERE portfolio = '${portfolio}' AND $__timeFilter(ts)
                WINDOW w AS (ORDER BY ts), closes AS (ORDER BY benchmark_close IS NULL, ts)
                ORDER BY ts""", fmt="time_series")))
        .with_panel(
            timeseries.Panel().title("Drawdown").datasource(PG).unit("percentunit").height(8).span(12)
            .with_target(sql(f"SELECT ts AS time, -drawdown AS drawdown {snap}", fmt="time_series")))
        .with_panel(
            timeseries.Panel().title("Realized and unrealized P&L").datasource(PG).unit("currencyUSD")
            .height(8).span(12)
            .with_target(sql(f"SELECT ts AS time, realized_pnl AS realized, unrealized_pnl AS unrealized {snap}",
                             fmt="time_series")))
    )


def positions() -> gdb.Dashboard:
    return (
        _board("lab-positions", "Lab / Positions")
        .with_variable(portfolio_variable())
        .with_panel(
            table.Panel().title("Open positions").datasource(PG).height(12).span(24)
            .with_target(sql("""
                SELECT symbol, strategy, qty AS quantity, avg_price AS entry, last_price AS current_price,
                       (last_price - avg_price) * qty AS pnl,
                       sign(qty) * (last_price / NULLIF(avg_price, 0) - 1) AS pnl_pct,
                       stop_loss, take_profit, opened_at
                FROM positions WHERE portfolio = '${portfolio}' AND qty <> 0 ORDER BY symbol, strategy""")))
        .with_panel(
            timeseries.Panel().title("Open positions by strategy (live)").datasource(PROM).height(8).span(12)
            .with_target(promql('sum by (strategy) (lab_open_positions{portfolio="$portfolio"})',
                                legend="{{strategy}}")))
        .with_panel(
            timeseries.Panel().title("Open positions and invested value").datasource(PG).height(8).span(12)
            .with_target(sql("""
                SELECT ts AS time, open_positions, positions_value FROM portfolio
                WHERE portfolio = '${portfolio}' AND $__timeFilter(ts) ORDER BY ts""", fmt="time_series")))
    )


def trade_history() -> gdb.Dashboard:
    return (
        _board("lab-trades", "Lab / Trade history")
        .with_variable(portfolio_variable())
        .with_variable(sql_variable(
            "strategy", "SELECT DISTINCT strategy FROM trades WHERE portfolio = '${portfolio}' ORDER BY 1", multi=True))
        .with_variable(sql_variable(
            "symbol", "SELECT DISTINCT symbol FROM trades WHERE portfolio = '${portfolio}' ORDER BY 1", multi=True))
        .with_panel(
            timeseries.Panel().title("Cumulative realized P&L after fees").datasource(PG).unit("currencyUSD")
            .height(8).span(24)
            .with_target(sql(f"""
                SELECT ts AS time, sum(realized_pnl) OVER (ORDER BY ts, id) AS "realized P&L"
                FROM trades WHERE {FILLS} AND $__timeFilter(ts) ORDER BY ts""", fmt="time_series")))
        .with_panel(
            table.Panel().title("Fills").datasource(PG).height(14).span(24)
            .with_target(sql(f"""
                SELECT ts AS time, strategy, symbol, side, qty, price, qty * price AS notional, fee, realized_pnl
                FROM trades WHERE {FILLS} AND $__timeFilter(ts) ORDER BY ts DESC""")))
    )


# Daily realized P&L per strategy on a gap-free calendar: the base of every performance panel.
# A trade is a round trip as the backtest report counts it (lab.performance.round_trips): from
# flat back to flat per (strategy, symbol), its P&L every fill's realized P&L in between (each
# already net of its fee), the two legs of a pair closed by one decision counted as one trade.
# Positions and P&L are summed over all history, so a trade opened before the range counts whole.
_DAILY = """
WITH capital AS (SELECT equity FROM portfolio WHERE portfolio = '${portfolio}' ORDER BY ts LIMIT 1),
days AS (SELECT generate_series(date_trunc('day', $__timeFrom()::timestamptz),
                                date_trunc('day', $__timeTo()::timestamptz), interval '1 day') AS day),
strategies AS (SELECT DISTINCT strategy FROM trades
               WHERE portfolio = '${portfolio}' AND strategy IN (${strategy:sqlstring})),
ledger AS (SELECT t.id, t.ts, t.strategy, t.symbol, coalesce(o.pair, t.symbol) AS traded, o.cycle_as_of AS decided,
                  sum(t.realized_pnl) OVER books AS realized,
                  sum(CASE WHEN t.side = 'buy' THEN t.qty ELSE -t.qty END) OVER books AS held
           FROM trades t JOIN orders o ON o.id = t.order_id WHERE t.portfolio = '${portfolio}'
           WINDOW books AS (PARTITION BY t.strategy, t.symbol ORDER BY t.ts, t.id)),
closed AS (SELECT strategy, traded, decided, ts,
                  realized - coalesce(lag(realized) OVER (PARTITION BY strategy, symbol ORDER BY ts, id), 0) AS pnl
           FROM ledger WHERE abs(held) < 1e-9),
trips AS (SELECT strategy, max(ts) AS ts, sum(pnl) AS pnl FROM closed GROUP BY strategy, traded, decided),
outcomes AS (SELECT date_trunc('day', ts) AS day, strategy, count(*) AS closes, count(*) FILTER (WHERE pnl > 0) AS wins
             FROM trips WHERE $__timeFilter(ts) GROUP BY 1, 2),
fills AS (SELECT date_trunc('day', ts) AS day, strategy, sum(realized_pnl) AS pnl
          FROM trades WHERE portfolio = '${portfolio}' AND $__timeFilter(ts) GROUP BY 1, 2),
daily AS (SELECT d.day, s.strategy, coalesce(f.pnl, 0) / (SELECT equity FROM capital) AS ret,
                 coalesce(o.closes, 0) AS closes, coalesce(o.wins, 0) AS wins
          FROM days d CROSS JOIN strategies s LEFT JOIN fills f ON f.day = d.day AND f.strategy = s.strategy
          LEFT JOIN outcomes o ON o.day = d.day AND o.strategy = s.strategy),
curve AS (SELECT day, strategy, ret,
                 sum(ret) OVER (PARTITION BY strategy ORDER BY day) AS roi,
                 sum(wins) OVER (PARTITION BY strategy ORDER BY day) AS wins,
                 sum(closes) OVER (PARTITION BY strategy ORDER BY day) AS closes,
                 avg(ret) OVER last20 / NULLIF(stddev_samp(ret) OVER last20, 0) * sqrt(365) AS sharpe
          FROM daily WINDOW last20 AS (PARTITION BY strategy ORDER BY day ROWS 19 PRECEDING))
"""


def _per_strategy(title: str, value: str, unit: str) -> timeseries.Panel:
    return (timeseries.Panel().title(title).datasource(PG).unit(unit).height(8).span(12)
            .with_target(sql(f"{_DAILY} SELECT day AS time, strategy AS metric, {value} AS value "
                             "FROM curve ORDER BY 1, 2", fmt="time_series")))


def strategy_performance() -> gdb.Dashboard:
    return (
        _board("lab-strategy", "Lab / Strategy performance", time_from="now-180d")
        .description("Per-strategy results from realized P&L after fees, relative to the portfolio's "
                     "starting equity, per calendar day; Sharpe is annualized over 365 such days (a "
                     "stock's weekend is a day without P&L), over a rolling 20-day window.")
        .with_variable(portfolio_variable())
        .with_variable(sql_variable(
            "strategy", "SELECT DISTINCT strategy FROM trades WHERE portfolio = '${portfolio}' ORDER BY 1", multi=True))
        .with_panel(_per_strategy("ROI", "roi", "percentunit"))
        .with_panel(_per_strategy("Win rate", "wins::float / NULLIF(closes, 0)", "percentunit"))
        .with_panel(_per_strategy("Sharpe (rolling 20 days)", "sharpe", "none"))
        .with_panel(_per_strategy(
            "Drawdown", "(1 + roi) / max(1 + roi) OVER (PARTITION BY strategy ORDER BY day) - 1", "percentunit"))
        .with_panel(
            table.Panel().title("Summary").datasource(PG).height(8).span(24)
            .with_target(sql(f"""{_DAILY}
                SELECT strategy, sum(closes) AS closed_trades, sum(wins)::float / NULLIF(sum(closes), 0) AS win_rate,
                       sum(ret) AS roi, avg(ret) / NULLIF(stddev_samp(ret), 0) * sqrt(365) AS sharpe
                FROM daily GROUP BY strategy ORDER BY strategy""")))
    )


def signals() -> gdb.Dashboard:
    where = "portfolio = '${portfolio}' AND strategy IN (${strategy:sqlstring})"
    columns = ("strategy, symbol, side, confidence, ev, rr, entry, stop_loss, take_profit, "
               "model_version, status, reason")
    return (
        _board("lab-signals", "Lab / Signals", time_from="now-30d")
        .with_variable(sql_variable("portfolio", "SELECT DISTINCT portfolio FROM signals ORDER BY 1"))
        .with_variable(sql_variable(
            "strategy", "SELECT DISTINCT strategy FROM signals WHERE portfolio = '${portfolio}' ORDER BY 1", multi=True))
        .with_panel(
            table.Panel().title("Current signals (latest cycle, before execution)").datasource(PG).height(10).span(24)
            .with_target(sql(f"""
                SELECT as_of AS time, {columns} FROM signals
                WHERE {where} AND as_of = (SELECT max(as_of) FROM signals WHERE portfolio = '${{portfolio}}')
                ORDER BY confidence DESC""")))
        .with_panel(
            timeseries.Panel().title("Signals per day").datasource(PG).height(8).span(12)
            .draw_style(cm.GraphDrawStyle.BARS)
            .with_target(sql(f"""
                SELECT $__timeGroupAlias(as_of, '1d'), strategy AS metric, count(*) AS value FROM signals
                WHERE {where} AND $__timeFilter(as_of) GROUP BY 1, 2 ORDER BY 1""", fmt="time_series")))
        .with_panel(
            timeseries.Panel().title("Signals by outcome (live)").datasource(PROM).height(8).span(12)
            .with_target(promql('sum by (strategy, status) (lab_signals{portfolio="$portfolio", strategy=~"$strategy"})',
                                legend="{{strategy}} {{status}}")))
        .with_panel(
            table.Panel().title("Signal history").datasource(PG).height(12).span(24)
            .with_target(sql(f"""
                SELECT as_of AS time, {columns} FROM signals
                WHERE {where} AND $__timeFilter(as_of) ORDER BY as_of DESC, confidence DESC""")))
    )

