"""A user's own history: one CSV or Parquet file per symbol in a folder.

Columns (case and spacing do not matter): ``date`` or ``timestamp``, ``open``, ``high``,
``low``, ``close``, ``volume``; optional ``adjusted close``, ``dividend(s)`` and ``split
coefficient``, applied as described in :mod:`universe.adjust`. The file name (without
extension) is the symbol. Bars are stored with source ``file``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from lab.errors import DataError, ProviderError
from universe.adjust import adjust_prices
from universe.providers.base import AssetInfo, raw_bars

__all__ = ["FileProvider", "SUFFIXES"]

SUFFIXES = (".csv", ".parquet", ".pq")
_ALIASES = {
    "date": "ts", "timestamp": "ts", "datetime": "ts", "time": "ts",
    "adj_close": "adj_close", "adjusted_close": "adj_close", "adjclose": "adj_close",
    "dividend": "dividend", "dividends": "dividend", "dividend_amount": "dividend",
    "split_coefficient": "split_coefficient", "split": "split_coefficient", "splits": "split_coefficient",
}
REQUIRED = ("ts", "open", "high", "low", "close", "volume")


def _normalise(name: str) -> str:
    key = "_".join(str(name).strip().lower().replace("-", " ").replace(".", " ").split())
    return _ALIASES.get(key, key)


def _named(column: str) -> str:
    """A required column with the other names a file may give it (``_ALIASES``)."""
    others = [alias for alias, canonical in _ALIASES.items() if canonical == column and alias != column]
    return f"{column} (or {', '.join(others)})" if others else column


class FileProvider:
    name = "files"
    asset_classes = frozenset({"stocks", "crypto"})

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"--path {self.folder}: not a directory")

    def files(self) -> dict[str, Path]:
        """Symbol -> file, for every CSV/Parquet file in the folder."""
        found: dict[str, Path] = {}
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() in SUFFIXES:
                symbol = path.stem.strip().upper()
                if symbol in found:
                    raise DataError(f"two files for {symbol} in {self.folder}: {found[symbol].name}, {path.name}")
                found[symbol] = path
        return found

    def fetch_bars(self, symbol: str, asset_class: str, since: date | None) -> pd.DataFrame:
        path = self.files().get(symbol)
        if path is None:
            raise ProviderError(self.name, f"no file for {symbol} in {self.folder} ({', '.join(SUFFIXES)})")
        try:
            data = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
        except Exception as exc:
            raise ProviderError(self.name, f"cannot read {path.name}: {exc}") from None
        data = data.rename(columns=_normalise)
        missing = [c for c in REQUIRED if c not in data.columns]
        if missing:
            shown = ", ".join(map(str, data.columns))
            raise ProviderError(self.name, f"{path.name} lacks column(s) {', '.join(map(_named, missing))} "
                                           f"(has: {shown})")
        try:
            stamps = pd.to_datetime(data["ts"], utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise ProviderError(self.name, f"{path.name}: unparseable date/timestamp column: {exc}") from None
        frame = raw_bars(stamps, data["open"], data["high"], data["low"], data["close"], data["volume"],
                         source="file")
        order = stamps.argsort(kind="stable").to_numpy()
        for column in ("adj_close", "dividend", "split_coefficient"):
            if column in data.columns:
                frame[column] = pd.to_numeric(data[column], errors="coerce").to_numpy(dtype=float)[order]
        frame = adjust_prices(frame)
        if since is not None:
            frame = frame[frame["ts"] >= pd.Timestamp(since, tz="UTC")]
        return frame.reset_index(drop=True)

    def fetch_metadata(self, symbols: list[str], asset_class: str) -> list[AssetInfo]:
        return []
