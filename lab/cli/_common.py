"""Helpers shared by the CLI modules: the console, table rendering, ``KEY=VALUE`` options."""

from __future__ import annotations

import json
import math
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lab.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Titles and cells are shown as written: a name like "run [top_quantile=0.5]" is not
    rich markup; in a narrow terminal a long cell folds onto more lines rather than losing
    its end (an id or a portfolio name cut short is no use)."""
    table = Table(title=escape(title))
    for column in columns:
        table.add_column(escape(column), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row))
    console.print(table)


def figure(name: str, value: float | int | str | None) -> str:
    """A metric or gate figure (``name`` as in ``Metrics``) as every CLI table shows it, fresh or
    as stored (``Metrics.as_dict``): a fraction (``PERCENT_FIGURES``) in percent with two
    decimals, a count as it is, another figure with two decimals; "-" where it is undefined
    (None, NaN) and "inf" where infinite (a profit factor without a losing trade)."""
    from lab.performance import PERCENT_FIGURES  # (pandas: not loaded for every command)

    if isinstance(value, str):  # "inf" / "-inf" as stored
        return value
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if name in PERCENT_FIGURES:
        return f"{100 * value:.2f}%"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def parse_assignment(option: str, item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it can be (else kept as text)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError([f"{option} {item!r}: expected KEY=VALUE"])
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def output_dir(option: str, directory: Path) -> Path:
    """``directory`` created (with its parents) and written to once, before any work is
    done, or a clear error: a long run should not end in a traceback because its output
    cannot be written (a folder that exists may still refuse files: read-only, or /proc)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if directory.is_file():
            raise ConfigError([f"{option} {directory}: a file, not a folder"]) from None
        # a file where a folder above it should be: name it ("Not a directory" does not say which)
        blocker = next((parent for parent in directory.parents if parent.is_file()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror
        raise ConfigError([f"{option} {directory}: cannot create it ({why})"]) from None
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise ConfigError([f"{option} {directory}: cannot write there ({exc.strerror})"]) from None
    return directory


def output_file(option: str, path: Path) -> Path:
    """``path`` refused up front when it names a folder (``--out .`` or ``--out ''``, which is
    the same path), and its folder checked as :func:`output_dir` does: the writer would
    otherwise fail only after all the work, with IsADirectoryError."""
    if path.is_dir():
        raise ConfigError([f"{option} {path}: a folder, not a file path"])
    output_dir(option, path.parent)
    return path


def free_port(host: str, port: int) -> None:
    """Refuse, before any work, a port this machine cannot listen on: the servers started
    later (Serve's proxy inside Ray, the metrics exporter) fail in their own long tracebacks,
    and the demo only after its tuning."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
            probe.bind(address)
    except OSError as exc:
        raise ConfigError([f"--port {port} on {host}: cannot listen there ({exc.strerror or exc})"]) from None
