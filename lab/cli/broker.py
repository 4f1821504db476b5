"""``lab broker status`` and ``lab kill-switch on|off|status``.

``--live``: real-money endpoints are used only when the config sets ``execution.live: true``
AND the command gets ``--live``; ``--live`` without the config flag is an error, and the
config flag without ``--live`` still trades the paper account.
"""

from __future__ import annotations

import typer

from lab.cli._common import console, err_console, print_table
from lab.errors import LabError
from lab.runtime import LabContext, open_lab
from lab.trading import killswitch
from lab.trading.broker import BrokerInterface

app = typer.Typer(help="The configured real broker (Alpaca or Binance; paper accounts by default).",
                  no_args_is_help=True)
kill_switch_app = typer.Typer(help="Stop all order submission at once (read by every trading cycle).",
                              no_args_is_help=True)

LIVE = typer.Option(False, "--live", help="real-money endpoints (also needs execution.live: true in the config)")
BASE_URL = typer.Option(None, "--base-url", help="the broker API base URL (default: its paper/testnet URL)")


def _broker(lab: LabContext, live: bool, base_url: str | None) -> BrokerInterface:
    from lab.trading.brokers import open_real_broker

    return open_real_broker(lab.settings, lab.config, live=live, base_url=base_url)


@app.command("status")
def status_cmd(live: bool = LIVE, base_url: str | None = BASE_URL) -> None:
    """Account, positions and open orders as the broker reports them, and the kill switch."""
    lab = open_lab()
    broker = _broker(lab, live, base_url)
    account = broker.account()
    portfolio = getattr(broker, "portfolio", broker.name)
    console.print(f"{broker.name} ({getattr(broker, 'base_url', '')}): cash {account.cash:,.2f} "
                  f"equity {account.equity:,.2f} {account.currency}; kill switch "
                  f"{'ON' if killswitch.is_killed(lab.engine, portfolio) else 'off'}")
    print_table("Broker positions", ["symbol", "qty", "avg price"],
                [(p.symbol, f"{p.qty:g}", f"{p.avg_price:,.4f}") for p in broker.positions()])
    print_table("Open orders", ["client order id", "symbol", "side", "qty", "type", "status"],
                [(o.client_order_id, o.symbol, o.side, f"{o.qty:g}", o.order_type, o.status)
                 for o in broker.open_orders()])


@kill_switch_app.command("on")
def on_cmd(reason: str = typer.Option(..., "--reason", help="why (stored and shown)"),
           portfolio: str = typer.Option(killswitch.ALL, help="one account (cancels only its own orders), or * for "
                                         "all (cancels every open order at the broker)"),
           cancel: bool = typer.Option(True, help="cancel the open orders at the broker too (the paper broker's: "
                                       "those its next cycle would fill)"),
           live: bool = LIVE, base_url: str | None = BASE_URL) -> None:
    """Engage: no cycle submits another order until `lab kill-switch off`. The switch is stored
    first; a broker that cannot be opened or does not answer then exits 1, the switch on."""
    lab = open_lab()
    killswitch.engage(lab.engine, portfolio, reason)
    console.print(f"kill switch ON for {portfolio}: {reason}", markup=False)
    if not cancel:
        return
    at = lab.config.execution.broker
    try:
        if at == "paper":
            outcome = killswitch.cancel_paper_orders(lab.engine, lab.config, portfolio, reason)
        else:
            outcome = killswitch.cancel_open_orders(lab.engine, lab.config, _broker(lab, live, base_url), portfolio,
                                                    reason)
    except LabError as exc:
        err_console.print(f"error: the open orders at {at} were NOT cancelled: {exc}\n"
                          f"The switch is on: no cycle submits another order. Cancel them at the broker, or "
                          f"run this command again once it answers.", markup=False, highlight=False)
        raise typer.Exit(1) from None
    whose = "" if portfolio == killswitch.ALL else f" of {portfolio}"
    console.print(f"cancelled {len(outcome.cancelled)} open order{'s' * (len(outcome.cancelled) != 1)}{whose} "
                  f"at {at}", markup=False)
    if outcome.unknown:
        console.print(f"left open at {at}, in no portfolio's journal: " + ", ".join(
            f"{o.client_order_id} ({o.side.value} {o.qty:g} {o.symbol} {o.order_type.value})" for o in outcome.unknown)
            + "; the lab cannot tell whose they are: cancel them at the broker if they should stop too",
            markup=False, highlight=False)


@kill_switch_app.command("off")
def off_cmd(portfolio: str = typer.Option(killswitch.ALL, help="the account whose own switch to release, or * for "
                                          "the switch for every account (the accounts' own switches stay on)")) -> None:
    """Release one switch deliberately: submission resumes at the next cycle where no other
    switch holds the account. Releasing * lists the accounts still stopped by their own."""
    engine = open_lab().engine
    still = killswitch.release(engine, portfolio)
    if portfolio != killswitch.ALL:
        console.print(f"kill switch off for {portfolio}" + (
            f"; {portfolio} stays stopped by the switch for every account ({killswitch.ALL}): release that one "
            f"with `lab kill-switch off`" if still else ""), markup=False)
        return
    console.print(f"kill switch off for {killswitch.ALL} (every account)", markup=False)
    for s in killswitch.switches(engine):
        if s.killed:
            console.print(f"still ON by its own switch: {s.portfolio} ({s.kill_reason}); release it with "
                          f"`lab kill-switch off --portfolio {s.portfolio}`", markup=False)


@kill_switch_app.command("status")
def status_switch_cmd() -> None:
    """Every account's kill switch as the cycles apply it (its own, or * for every account,
    named under "engaged by"), and its halt, with reasons."""
    print_table("Trading controls", ["portfolio", "kill switch", "engaged by", "reason", "halted", "halt reason"],
                [(s.portfolio, "ON" if s.killed else "off", ", ".join(s.engaged_by), s.kill_reason,
                  "yes" if s.halted else "", s.halt_reason) for s in killswitch.switches(open_lab().engine)])
