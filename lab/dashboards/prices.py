"""The Prices board: candlesticks with SMA and Bollinger overlays, one portfolio's fill markers, RSI and MACD.

Indicators are read from the ``indicators`` table in long form under the names in
``INDICATORS`` (whoever computes features writes them under these names).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import candlestick, common, timeseries
from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.models import candlestick as cdm
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as gm

from lab.dashboards._sdk import PG, portfolio_variable, sql, sql_variable

__all__ = ["INDICATORS", "prices"]

OVERLAYS = ("sma_20", "sma_50", "bb_upper", "bb_middle", "bb_lower")
INDICATORS = (*OVERLAYS, "rsi_14", "macd", "macd_signal", "macd_hist")


def _pivot(names: tuple[str, ...]) -> str:
    return ", ".join(f"max(i.value) FILTER (WHERE i.name = '{n}') AS {n}" for n in names)


def _indicator_sql(names: tuple[str, ...]) -> str:
    return f"""
        SELECT i.ts AS time, {_pivot(names)} FROM indicators i
        WHERE i.symbol = '${{symbol}}' AND i.interval = '${{interval}}' AND $__timeFilter(i.ts)
          AND i.name IN ({", ".join(f"'{n}'" for n in names)})
        GROUP BY i.ts ORDER BY i.ts"""


def _fills(side: str) -> str:
    """The chosen portfolio's average fill price on the bar's day (paper and every stored
    backtest trade the same symbols: averaged together, the marker matched no real fill)."""
    return f"""(SELECT avg(t.price) FROM trades t WHERE t.portfolio = '${{portfolio}}' AND t.symbol = p.symbol
              AND t.side = '{side}' AND date_trunc('day', t.ts) = date_trunc('day', p.ts)) AS {side}_fill"""


CANDLES = f"""
    SELECT p.ts AS time, p.open, p.high, p.low, p.close, p.volume, {_pivot(OVERLAYS)},
           {_fills("buy")}, {_fills("sell")}
    FROM price_history p
    LEFT JOIN indicators i ON i.symbol = p.symbol AND i.interval = p.interval AND i.ts = p.ts
    WHERE p.symbol = '${{symbol}}' AND p.interval = '${{interval}}' AND $__timeFilter(p.ts)
    GROUP BY p.symbol, p.ts, p.open, p.high, p.low, p.close, p.volume ORDER BY p.ts"""


def _props(**values: object) -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val=key.replace("__", "."), value=value) for key, value in values.items()]


def _marker(color: str) -> list[gm.DynamicConfigValue]:
    return _props(custom__drawStyle="points", custom__pointSize=12, custom__showPoints="always",
                  color={"mode": "fixed", "fixedColor": color})


def prices() -> gdb.Dashboard:
    candles = (
        candlestick.Panel().title("${symbol}: candles, SMA 20/50, Bollinger (20, 2), fills")
        .datasource(PG).with_target(sql(CANDLES)).height(14).span(24)
        .mode(cdm.VizDisplayMode.CANDLES_VOLUME).candle_style(cdm.CandleStyle.CANDLES)
        .color_strategy(cdm.ColorStrategy.OPEN_CLOSE).include_all_fields(True)
        .fields(candlestick.CandlestickFieldMap().open("open").high("high").low("low").close("close")
                .volume("volume"))
        .override_by_regexp("bb_(upper|lower)", _props(custom__lineStyle={"fill": "dash", "dash": [6, 4]}))
        .override_by_name("buy_fill", _marker("green"))
        .override_by_name("sell_fill", _marker("red"))
    )
    return (
        gdb.Dashboard("Lab / Prices").uid("lab-prices").tags(["strategy-lab"]).time("now-180d", "now")
        .timezone("utc").readonly()
        .with_variable(sql_variable("interval", "SELECT DISTINCT interval FROM price_history ORDER BY 1"))
        .with_variable(sql_variable(
            "symbol", "SELECT DISTINCT symbol FROM price_history WHERE interval = '${interval}' ORDER BY 1"))
        .with_variable(portfolio_variable())
        .with_panel(candles)
        .with_panel(
            timeseries.Panel().title("RSI (14)").datasource(PG).min(0).max(100).height(7).span(24)
            .with_target(sql(_indicator_sql(("rsi_14",)), fmt="time_series"))
            .thresholds_style(common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE))
            .thresholds(gdb.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE).steps([
                gm.Threshold(value=None, color="green"), gm.Threshold(value=30.0, color="orange"),
                gm.Threshold(value=70.0, color="red")])))
        .with_panel(
            timeseries.Panel().title("MACD (12, 26, 9)").datasource(PG).height(7).span(24)
            .with_target(sql(_indicator_sql(("macd", "macd_signal", "macd_hist")), fmt="time_series"))
            .override_by_name("macd_hist", _props(custom__drawStyle="bars", custom__fillOpacity=60)))
    )
