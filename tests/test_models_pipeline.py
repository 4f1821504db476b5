"""``train_and_promote_all``: stored bars -> lab.features training data -> tuning -> registry."""

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, select

from lab.db import connect, session_scope
from lab.db.models import PriceBar, TuningRun
from lab.errors import ConfigError
from lab.models.pipeline import _training_data, leaderboard, train_and_promote_all
from lab.models.problem import RETURN_COLUMN
from lab.runtime import LabContext
from lab.settings import get_settings
from lab.strategy import get_strategy


def _store_random_walks(engine, symbols, days=500, seed=4) -> None:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2018-01-01", periods=days, tz="UTC")
    rows = []
    for symbol in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, days)))
        for ts, c in zip(dates, close, strict=False):
            rows.append({"asset_type": "stocks", "symbol": symbol, "interval": "1d", "ts": ts.to_pydatetime(),
                         "open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1e6,
                         "source": "test", "synthetic": True})
    with engine.begin() as conn:
        conn.execute(insert(PriceBar), rows)


def _stored_closes(engine) -> dict[str, pd.DataFrame]:
    with engine.connect() as conn:
        frame = pd.read_sql(select(PriceBar.symbol, PriceBar.ts, PriceBar.close), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return {s: f.sort_values("ts") for s, f in frame.groupby("symbol")}


def test_a_random_walk_universe_is_tuned_registered_and_kept_as_candidate(ray_session, engine):
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"])
    ctx = LabContext(settings=get_settings(), engine=engine)
    seen = []
    outcomes = train_and_promote_all(ctx, ["swing"], trials=2, progress=lambda *a: seen.append(a))
    (outcome,) = outcomes
    assert outcome.error is None, outcome.error
    assert abs(outcome.result.oos_score - 0.5) < 0.06
    assert outcome.result.problem.feature_names[0] == "rsi_14"
    assert not outcome.decision.promoted
    assert seen[-1] == ("swing", 2, 2)
    (version,) = ctx.registry.list_versions("trading", "swing")
    assert version.status == "candidate" and version.note == outcome.decision.reason
    with session_scope(engine) as session:
        assert session.scalars(select(TuningRun.promoted)).all() == [False]
    (row,) = leaderboard(outcomes)
    assert row["strategy"] == "swing" and row["version"] == 1 and not row["active"]


def test_a_pair_strategy_is_tuned_on_its_pairs_scored_by_its_hedged_spread_return(ray_session, engine):
    """A pair row earns what its position does: A against beta_t x A's value in B (beta_t the
    row's hedge ratio), the change of log A - beta_t log B per unit of gross notional (1 + |beta_t|)."""
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    ctx = LabContext(settings=get_settings(), engine=engine)
    data, _ = _training_data(ctx, get_strategy("pairs"), ["stocks"])
    assert set(data["symbol"]) == {"AAPL/GOOG", "AAPL/IBM", "AAPL/MSFT", "GOOG/IBM", "GOOG/MSFT", "IBM/MSFT"}
    closes = {s: np.log(f.set_index("ts")["close"]) for s, f in _stored_closes(engine).items()}
    for _, row in data.iloc[[0, len(data) // 2, -1]].iterrows():
        a, b = row["symbol"].split("/")
        now = closes[a].index.get_loc(row["timestamp"])
        moved = {leg: closes[leg].iloc[now + 10] - closes[leg].iloc[now] for leg in (a, b)}  # the label's horizon
        beta = row["hedge_ratio"]
        assert row[RETURN_COLUMN] == pytest.approx((moved[a] - beta * moved[b]) / (1 + abs(beta)))
        assert row["label"] == float(moved[a] - beta * moved[b] > 0)
    (outcome,) = train_and_promote_all(ctx, ["pairs"], trials=1)
    assert outcome.error is None, outcome.error
    assert [v.strategy for v in ctx.registry.list_versions("trading", "pairs")] == ["pairs"]


def test_strategies_named_are_tuned_once_each_in_one_run_and_registered_separately(ray_session, engine):
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    ctx = LabContext(settings=get_settings(), engine=engine)
    swing, momentum = train_and_promote_all(ctx, ["swing", "momentum", "swing"], trials=1)
    assert (swing.strategy, momentum.strategy) == ("swing", "momentum")
    assert swing.error is None and momentum.error is None, (swing.error, momentum.error)
    assert swing.result.storage_path == momentum.result.storage_path  # one Tune run
    assert [v.strategy for v in (ctx.registry.get(swing.decision.version_id),
                                 ctx.registry.get(momentum.decision.version_id))] == ["swing", "momentum"]


def test_a_strategy_without_stored_bars_reports_the_problem_and_the_rest_still_run(ray_session, engine):
    ctx = LabContext(settings=get_settings(), engine=engine)
    (outcome,) = train_and_promote_all(ctx, ["swing"], trials=1)
    assert outcome.result is None and "no stored bars" in outcome.error


def test_an_unchanged_rerun_reuses_the_registered_version_and_new_data_tunes_again(ray_session, engine):
    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    ctx = LabContext(settings=get_settings(), engine=engine)
    (first,) = train_and_promote_all(ctx, ["swing"], trials=1)
    (again,) = train_and_promote_all(ctx, ["swing"], trials=1)
    assert first.error is None and again.reused is not None and again.result is None
    assert again.reused.version == first.decision.version
    assert [v.version for v in ctx.registry.list_versions("trading", "swing")] == [1]
    assert "reused v1" in leaderboard([again])[0]["reason"]
    (bigger_budget,) = train_and_promote_all(ctx, ["swing"], trials=2)
    assert bigger_budget.reused is None and bigger_budget.decision.version == 2


def test_training_stops_at_the_end_cutoff(ray_session, engine):
    from datetime import UTC, datetime

    from lab.models.pipeline import _training_data
    from lab.strategy import get_strategy

    _store_random_walks(engine, ["AAPL", "MSFT", "IBM", "GOOG"], days=400)
    ctx = LabContext(settings=get_settings(), engine=engine)
    cutoff = datetime(2019, 1, 1, tzinfo=UTC)
    swing = get_strategy("swing")
    data, last_bar = _training_data(ctx, swing, ["stocks"], cutoff)
    assert last_bar <= pd.Timestamp(cutoff)
    last_label_bar = data["timestamp"].max() + pd.offsets.BDay(swing.label.horizon)
    assert last_label_bar <= pd.Timestamp(cutoff)


@pytest.mark.parametrize("trials", [0, -3])
def test_a_trial_budget_below_one_is_refused_not_replaced_by_the_config(sqlite_url, trials):
    ctx = LabContext(settings=get_settings(), engine=connect(sqlite_url))
    with pytest.raises(ConfigError, match=f"trials: Input should be greater than or equal to 1, got {trials}"):
        train_and_promote_all(ctx, ["swing"], trials=trials)
