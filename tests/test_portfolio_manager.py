"""The portfolio manager: books, sizing, risk limits, the drawdown halt and exits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lab.config import load_config
from lab.trading.model import Fill, Intent, Order, OrderStatus, Position, Side, cash_delta
from lab.trading.paper import Bar, PaperTradingExecutor
from lab.trading.portfolio import PortfolioManager
from tests.fakes.trading import STOCKS, utc, write_config

CONFIG_DIR = Path(__file__).parent


@pytest.fixture
def config(tmp_path):
    return load_config(write_config(tmp_path / "c.json"))


def configured(tmp_path, **sections):
    return load_config(write_config(tmp_path / "c2.json", **sections))


def fill(side: Side, qty: float, price: float, symbol: str = "AAPL", strategy: str = "momentum",
         fee: float = 0.0, n: int = 1) -> Fill:
    return Fill(fill_id=f"f{n}", client_order_id="c", portfolio="paper", strategy=strategy, symbol=symbol,
                side=side, qty=qty, price=price, fee=fee, ts=utc(2024, 1, 2))


def test_books_cash_positions_and_pnl_per_strategy_and_in_total(config):
    pm = PortfolioManager(config)
    pm.apply_fill(fill(Side.BUY, 10, 100.0, fee=1.0), asset_type="stocks")
    pm.apply_fill(fill(Side.BUY, 5, 50.0, symbol="BTC", strategy="breakout", n=2), asset_type="crypto")
    pm.mark({"AAPL": 110.0, "BTC": 40.0})
    assert pm.cash == 100_000 - 1_000 - 1.0 - 250
    assert pm.unrealized_pnl == pytest.approx(100 - 50)
    pm.apply_fill(fill(Side.SELL, 10, 120.0, fee=1.0, n=3), asset_type="stocks")
    assert pm.by_strategy()["momentum"]["realized_pnl"] == pytest.approx(200 - 2.0)
    assert pm.by_strategy()["breakout"]["unrealized_pnl"] == pytest.approx(-50)
    assert pm.equity == pytest.approx(pm.initial_cash + pm.realized_pnl + pm.unrealized_pnl)


@pytest.mark.parametrize(("sizing", "expected"), [
    ({"method": "fixed", "fixed_amount": 2_000}, 20),
    ({"method": "percent", "percent_of_equity": 0.03}, 30),
    ({"method": "risk", "risk_per_trade": 0.01}, 200),          # 1,000 at risk / 5 per share
    ({"method": "kelly", "kelly_fraction": 0.25, "kelly_cap": 0.05}, 50),  # 0.25 * (0.7 - 0.3/2) > 5% cap
    ({"method": "kelly", "kelly_fraction": 0.1, "kelly_cap": 0.2}, 55),    # 0.1 * 0.55 = 5.5% of equity
])
def test_sizing_methods(tmp_path, sizing, expected):
    pm = PortfolioManager(configured(tmp_path, sizing=sizing))
    qty = pm.target_qty(entry=100.0, stop_loss=95.0, confidence=0.7, odds=2.0, asset_type="stocks")
    assert qty == expected


def test_kelly_bets_at_the_odds_of_the_models_payoff(tmp_path):
    """A model whose wins average +3% and losses -2% offers odds of 1.5, whatever the
    take-profit/stop-loss ratio: full Kelly at 0.8 is 0.8 - 0.2 / 1.5 of equity."""
    pm = PortfolioManager(configured(tmp_path, sizing={"method": "kelly", "kelly_fraction": 0.5, "kelly_cap": 1.0}))
    qty = pm.target_qty(entry=100.0, stop_loss=95.0, confidence=0.8, odds=0.03 / 0.02, asset_type="stocks")
    assert qty == math.floor(100_000 * 0.5 * (0.8 - 0.2 / 1.5) / 100.0)


def test_kelly_sizes_nothing_without_an_edge(tmp_path):
    pm = PortfolioManager(configured(tmp_path, sizing={"method": "kelly"}))
    assert pm.target_qty(entry=100.0, stop_loss=95.0, confidence=0.3, odds=2.0, asset_type="stocks") == 0


def test_an_entry_is_cut_to_the_max_share_of_equity_per_position(config):
    decision = PortfolioManager(config).size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY,
                                                   entry=100.0, qty=1_000, asset_type="stocks")
    assert decision.qty * 100.0 <= 0.05 * 100_000 and decision.qty > 0
    assert "of equity per position" in decision.reason


def test_the_cash_reserve_limits_entries(config):
    pm = PortfolioManager(config, cash=18_000, positions=[
        Position(portfolio="paper", strategy="x", symbol="IBM", asset_type="stocks", qty=800, avg_price=100.0)])
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=100.0, qty=40,
                             asset_type="stocks")
    assert 0 < decision.qty * 100 <= 18_000 - 0.15 * pm.equity
    assert "cash reserve" in decision.reason


def test_the_sector_cap_limits_entries(config):
    held = Position(portfolio="paper", strategy="x", symbol="MSFT", asset_type="stocks", qty=290,
                    avg_price=100.0, sector="Tech")
    pm = PortfolioManager(config, cash=71_000, positions=[held], sectors={"AAPL": "Tech", "MSFT": "Tech"})
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=100.0, qty=40,
                             asset_type="stocks")
    assert "sector Tech" in decision.reason and decision.qty * 100 <= 0.30 * pm.equity - 29_000


def pending_entry(symbol: str, qty: float, strategy: str = "breakout", **extra) -> Order:
    return Order(client_order_id=f"pending-{symbol}", portfolio="paper", strategy=strategy, symbol=symbol,
                 asset_type="crypto" if symbol == "BTC" else "stocks", side=Side.BUY, qty=qty,
                 created_at=utc(2024, 1, 2), intent=Intent.ENTRY, **extra)


def test_a_pending_entry_counts_against_the_cash_at_its_own_symbols_price(tmp_path):
    pm = PortfolioManager(configured(tmp_path, risk={"max_position_pct": 0.9, "cash_reserve_pct": 0.15}))
    btc = pending_entry("BTC", 1.4)  # about 70,000 once it fills at 50,000
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=100.0, qty=250,
                             asset_type="stocks", pending=[btc], prices={"BTC": 50_000.0, "AAPL": 100.0})
    btc_cost = 1.4 * pm.costs.unit_cost(50_000.0, "crypto")
    assert "cash reserve" in decision.reason
    assert 0 < decision.qty * pm.costs.unit_cost(100.0, "stocks") <= pm.cash - btc_cost - 0.15 * pm.equity


def test_a_pending_entry_counts_towards_its_sectors_cap(tmp_path):
    pm = PortfolioManager(configured(tmp_path, risk={"max_position_pct": 0.2, "cash_reserve_pct": 0.0,
                                                     "max_sector_pct": 0.3}), sectors={"AAPL": "Tech", "MSFT": "Tech"})
    aapl = pending_entry("AAPL", 190, strategy="momentum")
    decision = pm.size_entry(strategy="momentum", symbol="MSFT", side=Side.BUY, entry=100.0, qty=190,
                             asset_type="stocks", pending=[aapl], prices={"AAPL": 100.0, "MSFT": 100.0})
    assert "sector Tech" in decision.reason
    assert (190 + decision.qty) * pm.costs.unit_cost(100.0, "stocks") <= 0.3 * pm.equity


def test_the_cash_owed_on_a_short_position_is_not_spent_on_entries(tmp_path):
    short, long = (Position(portfolio="paper", strategy="momentum", symbol=s, asset_type="stocks", qty=q,
                            avg_price=100.0, last_price=100.0) for s, q in (("AAPL", -499), ("IBM", 499)))
    # the short's 49,900 of proceeds bought the IBM shares: 100,000 of cash, 49,900 of it owed
    pm = PortfolioManager(configured(tmp_path, risk={"max_position_pct": 0.5, "cash_reserve_pct": 0.15,
                                                     "allow_shorts": True}), cash=100_000.0, positions=[short, long])
    decision = pm.size_entry(strategy="momentum", symbol="MSFT", side=Side.BUY, entry=100.0, qty=1_000,
                             asset_type="stocks")
    assert "cash reserve" in decision.reason  # not the 50% per position: the short's proceeds are owed
    assert decision.qty * pm.costs.unit_cost(100.0, "stocks") <= pm.cash - 49_900.0 - 0.15 * pm.equity


def test_a_part_filled_entry_counts_once_towards_max_positions(tmp_path):
    pm = PortfolioManager(configured(tmp_path, risk={"max_positions": 2}), positions=[
        Position(portfolio="paper", strategy="momentum", symbol="IBM", asset_type="stocks", qty=5, avg_price=10.0)])
    part_filled = pending_entry("IBM", 10, strategy="momentum", status=OrderStatus.PARTIALLY_FILLED)
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=10.0, qty=5,
                             asset_type="stocks", pending=[part_filled])
    assert decision.qty == 5


@pytest.mark.parametrize(("risk", "held", "reason"), [
    ({"max_positions": 2}, 2, "max positions reached (2)"),
    ({}, 3, "max positions for momentum reached (3)"),
])
def test_position_count_limits(tmp_path, risk, held, reason):
    pm = PortfolioManager(configured(tmp_path, risk=risk), positions=[
        Position(portfolio="paper", strategy="momentum", symbol=s, asset_type="stocks", qty=1, avg_price=10)
        for s in STOCKS[1:1 + held]])
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=10.0, qty=5,
                             asset_type="stocks")
    assert decision.qty == 0 and decision.reason == reason


def test_shorts_are_refused_unless_configured(config, tmp_path):
    kwargs = dict(strategy="momentum", symbol="AAPL", side=Side.SELL, entry=10.0, qty=5, asset_type="stocks")
    assert "short entries disabled" in PortfolioManager(config).size_entry(**kwargs).reason
    allowed = configured(tmp_path, risk={"allow_shorts": True})
    assert PortfolioManager(allowed).size_entry(**kwargs).qty == 5


def test_a_20pct_drawdown_halts_entries_until_lifted_deliberately(config):
    pm = PortfolioManager(config, positions=[
        Position(portfolio="paper", strategy="momentum", symbol="AAPL", asset_type="stocks", qty=1_000,
                 avg_price=100.0)], cash=0.0, peak_equity=100_000)
    pm.mark({"AAPL": 85.0})
    assert not pm.update_drawdown()
    pm.mark({"AAPL": 79.0})
    assert pm.update_drawdown() and pm.halted and "21.0%" in pm.halt_reason
    pm.mark({"AAPL": 100.0})
    pm.update_drawdown()
    assert pm.halted  # recovering does not lift it
    assert "entries halted" in pm.size_entry(strategy="momentum", symbol="MSFT", side=Side.BUY, entry=1.0,
                                             qty=1, asset_type="stocks").reason
    pm.lift_halt()
    assert not pm.halted and pm.peak_equity == pm.equity


@pytest.mark.parametrize(("price", "days", "intent"), [
    (94.0, 1, Intent.STOP_LOSS),
    (111.0, 1, Intent.TAKE_PROFIT),
    (101.0, 10, Intent.TIME_EXIT),
])
def test_exits_stop_loss_take_profit_and_holding_period(config, price, days, intent):
    position = Position(portfolio="paper", strategy="momentum", symbol="AAPL", asset_type="stocks", qty=10,
                        avg_price=100.0, stop_loss=95.0, take_profit=110.0, opened_at=utc(2024, 1, 1))
    pm = PortfolioManager(config, positions=[position])
    pm.mark({"AAPL": price})
    (decision,) = pm.exits(utc(2024, 1, 1 + days))
    assert decision.intent is intent


def test_no_exit_inside_the_levels_and_none_twice(config):
    position = Position(portfolio="paper", strategy="momentum", symbol="AAPL", asset_type="stocks", qty=10,
                        avg_price=100.0, stop_loss=95.0, take_profit=110.0, opened_at=utc(2024, 1, 1))
    pm = PortfolioManager(config, positions=[position])
    pm.mark({"AAPL": 101.0})
    assert pm.exits(utc(2024, 1, 3)) == []
    pm.mark({"AAPL": 90.0})
    pending = Order(client_order_id="x", portfolio="paper", strategy="momentum", symbol="AAPL",
                    asset_type="stocks", side=Side.SELL, qty=10, intent=Intent.STOP_LOSS, created_at=utc(2024, 1, 2))
    assert pm.exits(utc(2024, 1, 3), [pending]) == []


# --- properties -----------------------------------------------------------------------------

step = st.tuples(
    st.lists(st.floats(0.5, 1.6), min_size=4, max_size=4),          # price moves per symbol
    st.lists(st.sampled_from(STOCKS), max_size=4),                   # signals this step
    st.floats(1e2, 1e7),                                             # bar volume
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=12), method=st.sampled_from(["fixed", "percent", "risk", "kelly"]))
# a thin bar part-fills the AAPL entry; the next step may still take two more positions
@example(steps=[([1.0] * 4, ["AAPL"], 100.0), ([1.0] * 4, ["MSFT", "IBM"], 100.0)], method="fixed")
def test_no_order_breaks_a_risk_rule_cash_stays_positive_and_the_ledger_replays(tmp_path, steps, method):
    config = configured(tmp_path, sizing={"method": method, "fixed_amount": 9_000},
                        risk={"max_positions": 3, "max_position_pct": 0.05, "cash_reserve_pct": 0.2})
    risk = config.risk
    pm = PortfolioManager(config)
    broker = PaperTradingExecutor.from_config(config, cash=pm.cash, last_prices={s: 100.0 for s in STOCKS})
    prices = {s: 100.0 for s in STOCKS}
    ledger: list[Fill] = []
    for day, (moves, signals, volume) in enumerate(steps):
        now = utc(2024, 1, 2 + day)
        for s, m in zip(STOCKS, moves, strict=False):
            prev, prices[s] = prices[s], prices[s] * m
            for f in broker.on_bar(s, Bar(now, prev, max(prev, prices[s]), min(prev, prices[s]), prices[s], volume)):
                order = broker.get_order(f.client_order_id)
                pm.apply_fill(f, asset_type="stocks", order=order)
                ledger.append(f)
        pm.mark(prices)
        for s in signals:
            pending = broker.open_orders()
            entry = prices[s]
            qty = pm.target_qty(entry=entry, stop_loss=entry * 0.95, confidence=0.7, odds=2.0, asset_type="stocks")
            decision = pm.size_entry(strategy="momentum", symbol=s, side=Side.BUY, entry=entry, qty=qty,
                                     asset_type="stocks", pending=pending, prices=prices)
            if decision.qty <= 0:
                continue
            equity = pm.equity
            assert decision.qty * entry <= risk.max_position_pct * equity + 1e-9
            reserved = sum(o.remaining_qty * prices[o.symbol] for o in pending)  # each at its own price
            assert pm.cash - reserved - decision.qty * entry >= risk.cash_reserve_pct * equity - 1e-6
            # a part-filled entry is one position: its fills held and its rest pending
            held = {(p.strategy, p.symbol) for p in pm.open_positions()} | {(o.strategy, o.symbol) for o in pending}
            assert len(held) < risk.max_positions
            broker.submit(Order(client_order_id=f"{day}-{s}", portfolio="paper", strategy="momentum", symbol=s,
                                asset_type="stocks", side=Side.BUY, qty=decision.qty, created_at=now,
                                intent=Intent.ENTRY))
        assert pm.cash >= 0 and broker.account().cash >= 0
        assert all(p.qty >= 0 for p in pm.positions.values())  # long-only by default
    replayed: dict[str, Position] = {}
    cash = pm.initial_cash
    for f in ledger:
        replayed.setdefault(f.symbol, Position(portfolio="paper", strategy="momentum", symbol=f.symbol,
                                               asset_type="stocks")).apply(f)
        cash += cash_delta(f)
    assert cash == pm.cash
    assert {s: p.qty for s, p in replayed.items()} == {k[1]: p.qty for k, p in pm.positions.items()}
    assert pm.equity == pytest.approx(pm.cash + sum(p.qty * prices[p.symbol] for p in pm.positions.values()))
    assert math.isclose(pm.equity, pm.initial_cash + pm.realized_pnl + pm.unrealized_pnl, rel_tol=1e-9)


# --- one cost model for sizing and fills ---------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(slippage_bps=st.sampled_from([0.0, 5.0, 10.0, 80.0]), fee_bps=st.sampled_from([0.0, 1.0, 10.0]),
       price=st.floats(1.0, 5_000.0), open_move=st.floats(-0.05, 0.0))
@example(slippage_bps=0.0, fee_bps=0.0, price=1.0000000000000002, open_move=0.0)  # 10,000 shares cost a hair more
def test_an_entry_sized_as_affordable_is_affordable_at_the_fill(tmp_path, slippage_bps, fee_bps, price, open_move):
    """The manager sizes with the executor's cost model: all the cash, at any configured
    slippage (0 included, no hidden floor), is never refused nor cut at a fill no worse than
    the decision price."""
    config = configured(tmp_path, sizing={"method": "fixed", "fixed_amount": 1e9},
                        execution={"initial_cash": 10_000.0, "slippage_bps": slippage_bps,
                                   "fee_bps": {"stocks": fee_bps, "crypto": fee_bps}, "max_volume_share": 1.0},
                        risk={"max_position_pct": 1.0, "cash_reserve_pct": 0.0, "max_sector_pct": 1.0})
    pm = PortfolioManager(config)
    decision = pm.size_entry(strategy="momentum", symbol="AAPL", side=Side.BUY, entry=price, qty=1e9,
                             asset_type="stocks")
    unit_cost = price * (1 + slippage_bps / 1e4) * (1 + fee_bps / 1e4)
    assert decision.qty * unit_cost <= 10_000.0 < (decision.qty + 1) * unit_cost  # all of it, and no more
    broker = PaperTradingExecutor.from_config(config, cash=10_000.0, last_prices={"AAPL": price})
    order = Order(client_order_id="c", portfolio="paper", strategy="momentum", symbol="AAPL", asset_type="stocks",
                  side=Side.BUY, qty=decision.qty, created_at=utc(2024, 1, 8, 15))
    if decision.qty == 0:
        return
    assert broker.submit(order).status.is_open
    open_ = price * (1 + open_move)
    (filled,) = broker.on_bar("AAPL", Bar(utc(2024, 1, 9, 15), open_, open_, open_, open_, 1e12))
    assert filled.qty == decision.qty


def test_all_in_sizing_spends_the_cash_at_the_price_with_the_fee(tmp_path):
    config = configured(tmp_path, sizing={"method": "all_in", "all_in_fraction": 0.5},
                        execution={"initial_cash": 10_000.0, "slippage_bps": 0.0,
                                   "fee_bps": {"stocks": 10.0, "crypto": 10.0}})
    pm = PortfolioManager(config)
    assert pm.entry_notional() == 5_000.0
    assert pm.target_qty(entry=99.0, stop_loss=None, confidence=0.7, odds=None, asset_type="stocks") \
        == math.floor(5_000.0 / (99.0 * 1.001))


def test_quantity_sizing_has_no_notional(config):
    assert PortfolioManager(config).entry_notional() is None
