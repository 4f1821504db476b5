"""The lab's schema: one set of typed SQLAlchemy models for every part of the product.

Backtests and paper trading share the trading tables; a portfolio name tells them apart
(``paper`` for the live paper account, ``backtest:<id>`` for a backtest run).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lab.db.types import UTCDateTime, utcnow

__all__ = [
    "Base",
    "Stock",
    "Crypto",
    "Fundamental",
    "PriceBar",
    "QuarantinedBar",
    "PriceCorrection",
    "DataQuality",
    "IngestionRun",
    "Indicator",
    "ModelVersion",
    "ModelEvent",
    "TuningRun",
    "Signal",
    "Order",
    "Trade",
    "Position",
    "PortfolioSnapshot",
    "TradingControl",
    "TradingCycle",
    "Account",
    "Backtest",
    "BACKTEST_PREFIX",
]

#: a stored backtest's books share the trading tables under the portfolio "backtest:<key>"
BACKTEST_PREFIX = "backtest:"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# --- universe -------------------------------------------------------------------------


class Stock(Base):
    __tablename__ = "stocks"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    sector: Mapped[str | None] = mapped_column(String(100))
    industry: Mapped[str | None] = mapped_column(String(200))
    market_cap: Mapped[float | None] = mapped_column(Float)
    exchange: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Crypto(Base):
    __tablename__ = "crypto"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    coingecko_id: Mapped[str | None] = mapped_column(String(100))
    market_cap: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Fundamental(Base):
    """Point-in-time fundamentals: a value is usable from ``known_at`` on, never before."""

    __tablename__ = "fundamentals"
    __table_args__ = (UniqueConstraint("symbol", "known_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), index=True)
    known_at: Mapped[datetime]
    pe_ratio: Mapped[float | None] = mapped_column(Float)
    pb_ratio: Mapped[float | None] = mapped_column(Float)
    market_cap: Mapped[float | None] = mapped_column(Float)
    sector: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(32))


class PriceBar(Base):
    __tablename__ = "price_history"
    __table_args__ = (
        UniqueConstraint("symbol", "interval", "ts", name="uq_price_history_symbol_interval_ts"),
        Index("ix_price_history_asset_type_symbol", "asset_type", "symbol"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    asset_type: Mapped[str] = mapped_column(String(16))
    symbol: Mapped[str] = mapped_column(String(32))
    interval: Mapped[str] = mapped_column(String(8), default="1d")
    ts: Mapped[datetime]
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32))
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class QuarantinedBar(Base):
    """A bar that failed validation: kept with the reason, never silently dropped."""

    __tablename__ = "price_quarantine"
    __table_args__ = (UniqueConstraint("symbol", "interval", "ts", "source", "reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    asset_type: Mapped[str] = mapped_column(String(16))
    symbol: Mapped[str] = mapped_column(String(32), index=True)
    interval: Mapped[str] = mapped_column(String(8), default="1d")
    ts: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PriceCorrection(Base):
    """A stored bar that a provider later corrected: the old and new values."""

    __tablename__ = "price_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), index=True)
    interval: Mapped[str] = mapped_column(String(8))
    ts: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(32))
    old: Mapped[dict[str, Any]]
    new: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DataQuality(Base):
    """Latest data-quality summary per symbol and interval."""

    __tablename__ = "data_quality"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    interval: Mapped[str] = mapped_column(String(8), primary_key=True)
    asset_type: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(32))
    rows_stored: Mapped[int] = mapped_column(Integer, default=0)
    rows_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    missing_sessions: Mapped[int] = mapped_column(Integer, default=0)
    first_ts: Mapped[datetime | None]
    last_ts: Mapped[datetime | None]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestionRun(Base):
    """One symbol's fetch in one ingestion run (success or failure), for boards and reports."""

    __tablename__ = "ingestion_runs"
    __table_args__ = (Index("ix_ingestion_runs_provider_started", "provider", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # ok | failed
    rows_stored: Mapped[int] = mapped_column(Integer, default=0)
    rows_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Indicator(Base):
    """Indicator values in long form (for boards: SMA/Bollinger overlays, RSI, MACD)."""

    __tablename__ = "indicators"
    __table_args__ = (UniqueConstraint("symbol", "interval", "ts", "name"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    interval: Mapped[str] = mapped_column(String(8), default="1d")
    ts: Mapped[datetime]
    name: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)


# --- models -------------------------------------------------------------------------------


class ModelVersion(Base):
    """A registered model. The column is ``market`` for compatibility with adopted databases."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index("idx_model_versions_domain_market", "domain", "market"),
        Index("idx_model_versions_domain_market_active", "domain", "market", "is_active"),
        # exactly one active version per (domain, strategy), enforced by the database
        Index(
            "uq_model_versions_one_active",
            "domain",
            "market",
            unique=True,
            sqlite_where=text("is_active = 1"),
            postgresql_where=text("is_active"),
        ),
        UniqueConstraint("domain", "market", "version", name="uq_model_versions_domain_market_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(32), server_default="betting")
    strategy: Mapped[str] = mapped_column("market", String(64))
    version: Mapped[int] = mapped_column(Integer)
    model_path: Mapped[str] = mapped_column(String(500))
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    data_fingerprint: Mapped[str | None] = mapped_column(String(64))
    feature_fingerprint: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="candidate", server_default="candidate")
    note: Mapped[str | None] = mapped_column(Text)
    activated_at: Mapped[datetime | None]


class ModelEvent(Base):
    """Promotion history: registered, activated, rolled back, rejected (with the reason)."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    domain: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TuningRun(Base):
    __tablename__ = "tuning_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64), index=True)
    asset_class: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    trials: Mapped[int] = mapped_column(Integer, default=0)
    metric: Mapped[str] = mapped_column(String(32))
    #: the best params' score on the holdout no trial saw (runs stored before there was one: the
    #: best trial's mean over the folds it was selected on)
    best_score: Mapped[float | None] = mapped_column(Float)
    sharpe: Mapped[float | None] = mapped_column(Float)
    deflated_sharpe: Mapped[float | None] = mapped_column(Float)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fold_metrics: Mapped[list[Any] | None] = mapped_column(JSON)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    storage_path: Mapped[str | None] = mapped_column(String(500))


# --- trading -------------------------------------------------------------------------------


class Signal(Base):
    __tablename__ = "signals"
    __table_args__ = (
        UniqueConstraint("portfolio", "as_of", "strategy", "symbol", "side"),
        Index("ix_signals_as_of", "as_of"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portfolio: Mapped[str] = mapped_column(String(64), default="paper")
    as_of: Mapped[datetime]
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(64))  # pairs: "AAA/BBB"
    side: Mapped[str] = mapped_column(String(8))
    confidence: Mapped[float] = mapped_column(Float)
    entry: Mapped[float] = mapped_column(Float)
    stop_loss: Mapped[float | None] = mapped_column(Float)
    take_profit: Mapped[float | None] = mapped_column(Float)
    ev: Mapped[float | None] = mapped_column(Float)
    rr: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | ordered | skipped
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_portfolio_status", "portfolio", "status"),
        Index("ix_orders_portfolio_symbol", "portfolio", "symbol"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    portfolio: Mapped[str] = mapped_column(String(64), default="paper")
    broker: Mapped[str] = mapped_column(String(16), default="paper")
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    asset_type: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    order_type: Mapped[str] = mapped_column(String(16))  # market | limit | stop | stop_limit
    qty: Mapped[float] = mapped_column(Float)
    limit_price: Mapped[float | None] = mapped_column(Float)
    stop_price: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20))  # pending|partially_filled|filled|cancelled|rejected
    filled_qty: Mapped[float] = mapped_column(Float, default=0.0)
    avg_fill_price: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    intent: Mapped[str] = mapped_column(String(16), default="entry")  # entry|stop_loss|take_profit|time_exit|exit
    stop_loss: Mapped[float | None] = mapped_column(Float)  # bracket levels an entry carries
    take_profit: Mapped[float | None] = mapped_column(Float)
    notional: Mapped[float | None] = mapped_column(Float)  # a buy sized in cash (all-in sizing)
    pair: Mapped[str | None] = mapped_column(String(64))  # the pair "AAA/BBB" this order is a leg of
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    signal_id: Mapped[int | None] = mapped_column(ForeignKey("signals.id"))
    cycle_as_of: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Trade(Base):
    """One fill. Replaying a portfolio's trades reproduces its positions and cash exactly."""

    __tablename__ = "trades"
    __table_args__ = (Index("ix_trades_portfolio_ts", "portfolio", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fill_id: Mapped[str] = mapped_column(String(80), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    portfolio: Mapped[str] = mapped_column(String(64), default="paper")
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    qty: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    fee: Mapped[float] = mapped_column(Float, default=0.0)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    ts: Mapped[datetime]


class Position(Base):
    __tablename__ = "positions"

    portfolio: Mapped[str] = mapped_column(String(64), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    asset_type: Mapped[str] = mapped_column(String(16))
    sector: Mapped[str | None] = mapped_column(String(100))
    qty: Mapped[float] = mapped_column(Float)
    avg_price: Mapped[float] = mapped_column(Float)
    last_price: Mapped[float | None] = mapped_column(Float)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    stop_loss: Mapped[float | None] = mapped_column(Float)
    take_profit: Mapped[float | None] = mapped_column(Float)
    pair: Mapped[str | None] = mapped_column(String(64))  # the pair "AAA/BBB" this position is a leg of
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PortfolioSnapshot(Base):
    __tablename__ = "portfolio"
    __table_args__ = (UniqueConstraint("portfolio", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portfolio: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime]
    cash: Mapped[float] = mapped_column(Float)
    positions_value: Mapped[float] = mapped_column(Float)
    equity: Mapped[float] = mapped_column(Float)
    realized_pnl: Mapped[float] = mapped_column(Float)
    unrealized_pnl: Mapped[float] = mapped_column(Float)
    peak_equity: Mapped[float] = mapped_column(Float)
    drawdown: Mapped[float] = mapped_column(Float)
    halted: Mapped[bool] = mapped_column(Boolean, default=False)
    open_positions: Mapped[int] = mapped_column(Integer, default=0)
    benchmark_close: Mapped[float | None] = mapped_column(Float)
    by_strategy: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class TradingControl(Base):
    """Per-portfolio switches: the drawdown halt and the kill switch (read every cycle)."""

    __tablename__ = "trading_controls"

    portfolio: Mapped[str] = mapped_column(String(64), primary_key=True)
    halted: Mapped[bool] = mapped_column(Boolean, default=False)
    halt_reason: Mapped[str | None] = mapped_column(Text)
    kill_switch: Mapped[bool] = mapped_column(Boolean, default=False)
    kill_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TradingCycle(Base):
    """One trading cycle per (portfolio, as_of): the key that makes re-runs idempotent."""

    __tablename__ = "trading_cycles"
    __table_args__ = (UniqueConstraint("portfolio", "as_of"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portfolio: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # started | completed | abandoned
    stage: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Account(Base):
    """A portfolio's cash, updated in the same transaction as each trade it books, so
    replaying ``trades`` from ``initial_cash`` reproduces it exactly."""

    __tablename__ = "accounts"

    portfolio: Mapped[str] = mapped_column(String(64), primary_key=True)
    initial_cash: Mapped[float] = mapped_column(Float)
    cash: Mapped[float] = mapped_column(Float)
    peak_equity: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Backtest(Base):
    __tablename__ = "backtests"
    __table_args__ = {"sqlite_autoincrement": True}  # a deleted run's id is never another run's

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    portfolio: Mapped[str] = mapped_column(String(64), unique=True)
    strategies: Mapped[list[Any]] = mapped_column(JSON)
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date] = mapped_column(Date)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
