"""``lab trade cycle`` and ``lab portfolio``: run one paper-trading cycle, show the books."""

from __future__ import annotations

import typer
from sqlalchemy import select

from lab.cli._common import console, print_table

app = typer.Typer(help="Paper trading: run a cycle, lift a halt.", no_args_is_help=True)


@app.command("cycle")
def cycle(
    as_of: str | None = typer.Option(None, "--as-of", help="Decision time (ISO; a date means that session); "
                                                           "a real broker decides only at its present."),
    portfolio: str = typer.Option("paper", help="Portfolio name."),
    in_process: bool = typer.Option(False, "--in-process",
                                    help="predict with the registry's active models in this process instead "
                                         "of the Serve endpoint (LAB_SERVE_URL)"),
    live: bool = typer.Option(False, "--live", help="a real broker's live (real-money) endpoint; needs "
                                                     "execution.live: true in the config as well"),
) -> None:
    """Run (or resume) the trading cycle at AS_OF; a completed cycle is not run twice."""
    from lab.runtime import open_lab
    from lab.trading.cycle import decision_time, run_trading_cycle
    from lab.trading.predictions import RegistryPredictions
    from serving.client import PredictionServiceError, ServePredictionClient

    ctx = open_lab()
    settings = ctx.settings
    token = settings.serve_token.get_secret_value() if settings.serve_token else None
    predictions = RegistryPredictions(ctx.registry) if in_process else ServePredictionClient(settings.serve_url, token)
    try:
        with console.status("running the trading cycle"):
            result = run_trading_cycle(ctx, decision_time(as_of), portfolio=portfolio, predictions=predictions,
                                       live=live)
    except PredictionServiceError as exc:
        if exc.status:
            raise
        raise PredictionServiceError(0, f"{exc}: start it with `lab serve`, predict in this process with "
                                        "--in-process, or point LAB_SERVE_URL at a running one") from None
    state = (f"already completed at {result.completed_at:%Y-%m-%d %H:%M} UTC, not run again"
             if result.already_completed and result.completed_at else "completed")
    console.print(f"cycle {result.as_of.isoformat()} {state}: {result.signals} signals, "
                  f"{result.orders_placed} orders, {result.rejected} rejected, {result.fills} fills; "
                  f"cash {result.cash:,.2f}, equity {result.equity:,.2f}" + (" [HALTED]" if result.halted else ""))
    for line in result.explain():
        console.print(f"  {line}", markup=False, highlight=False)


@app.command("lift-halt")
def lift_halt(portfolio: str = typer.Option("paper", help="Portfolio name.")) -> None:
    """Resume entries in a portfolio its drawdown halt (or a reconciliation mismatch) stopped.

    Nothing lifts a halt on its own; the drawdown peak restarts at today's equity."""
    from lab.runtime import open_lab
    from lab.trading import store

    ctx = open_lab()
    books = store.lift_halt(ctx.engine, ctx.config, portfolio)
    console.print(f"halt lifted on {portfolio!r} (it was: {books.halt_reason}); entries resume at the next cycle, "
                  f"the drawdown peak restarts at equity {books.equity:,.2f}", markup=False, highlight=False)


def portfolio(name: str = typer.Option("paper", "--portfolio", help="Portfolio name.")) -> None:
    """Positions and P&L of a portfolio (from its books)."""
    from lab.db import models as db
    from lab.runtime import open_lab
    from lab.trading.store import existing_books

    ctx = open_lab()
    books = existing_books(ctx.engine, ctx.config, name)
    print_table(f"portfolio {name}", ["strategy", "symbol", "qty", "avg price", "last", "unrealized", "realized"], [
        (p.strategy, p.symbol + (f" (leg of {p.pair})" if p.pair and p.is_open else ""), f"{p.qty:g}",
         f"{p.avg_price:,.2f}",
         "" if p.last_price is None else f"{p.last_price:,.2f}", f"{p.unrealized_pnl:,.2f}", f"{p.realized_pnl:,.2f}")
        for p in sorted(books.positions.values(), key=lambda p: (p.strategy, p.symbol)) if p.is_open or p.realized_pnl
    ])
    with ctx.engine.connect() as conn:
        last = conn.execute(select(db.PortfolioSnapshot.ts).where(db.PortfolioSnapshot.portfolio == name)
                            .order_by(db.PortfolioSnapshot.ts.desc())).scalar()
    console.print(f"cash {books.cash:,.2f}  equity {books.equity:,.2f}  realized {books.realized_pnl:,.2f}  "
                  f"unrealized {books.unrealized_pnl:,.2f}  drawdown {books.drawdown:.1%}"
                  + (f"  HALTED: {books.halt_reason}" if books.halted else "")
                  + (f"  (marked {last.isoformat()})" if last else ""))
