"""Features for a whole universe: batched Ray tasks, a Parquet cache per symbol, a report.

Why tasks and not Ray Data: the unit of work is a small in-memory frame per symbol and the
result is wanted back in the driver as frames; Ray Data's per-block overhead and its
conversion to Arrow blocks would cost more than the indicators. Symbols are split into as
many batches as CPUs (so each task does far more work than its dispatch, about 0.5 ms), each
batch's input is put in the object store once, each task returns one flat numeric block
(one buffer to move, not hundreds of frames), and results are gathered as batches finish
(for the progress bar).

The cache holds one Parquet file per symbol under ``<cache_dir>/<set>/<symbol>/<key>.parquet``;
the key is a fingerprint of the symbol's bars, the benchmark, its fundamentals and the
feature set's version, so an unchanged symbol is read back and never recomputed, and a
changed bar recomputes that symbol only. The driver reads and writes the cache (workers of a
remote cluster need not share its disk).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lab.features._compute import benchmark_returns, compute_block, frame_of, output_columns, pair_bars
from lab.features._sets import FeatureSet, get_feature_set

__all__ = ["FeatureReport", "UniverseFeatures", "compute_universe_features", "candidate_pairs"]

#: symbols per Ray task at least: each does >= 10x its dispatch cost
MIN_BATCH = 8
#: bytes of results per Ray task at most (a 2,520-bar symbol is about 0.7 MB), so the
#: batches in flight fit the object store
MAX_BATCH_BYTES = 192 * 1024**2
#: symbols per block in the serial path
SERIAL_BATCH = 64
_META_KEY = b"lab.problems"

Progress = Callable[[int, int], None]
_Item = tuple[str, pd.DataFrame, pd.DataFrame | None]
#: a computed batch: the flat block, each symbol's bar count, problems and error (see compute_block)
_Block = tuple[np.ndarray, list[int], list[list[str]], list[str | None]]


@dataclass
class FeatureReport:
    """What a universe run did: computed or cached symbols, and every symbol with a problem."""

    feature_set: str
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def affected(self) -> list[str]:
        """Symbols whose features are partly undefined (problems) or missing (failed)."""
        return sorted(set(self.problems) | set(self.failed))

    def lines(self) -> list[str]:
        out = [f"{name}: failed: {why}" for name, why in sorted(self.failed.items())]
        out += [f"{name}: {p}" for name, ps in sorted(self.problems.items()) for p in ps]
        return out


class UniverseFeatures(dict[str, pd.DataFrame]):
    """{symbol: feature frame}, plus ``report`` (a FeatureReport)."""

    def __init__(self, frames: dict[str, pd.DataFrame], report: FeatureReport):
        super().__init__(frames)
        self.report = report


def candidate_pairs(symbols: Iterable[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct symbols, in sorted order."""
    return list(itertools.combinations(sorted(set(symbols)), 2))


def compute_universe_features(
    bars: dict[str, pd.DataFrame], feature_set: str, *, benchmark: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None, cache_dir: Path | None = None, use_ray: bool = True,
    progress: Progress | None = None,
) -> UniverseFeatures:
    """Features of every symbol (every candidate pair "AAA/BBB" for a pair set), equal to the
    serial computation; never raises for one bad symbol: it is reported instead.

    ``fundamentals`` is the long ``fundamentals`` table (a ``symbol`` column); ``progress``
    is called with (done, total). Call ``lab.runtime.ensure_ray()`` before ``use_ray=True``.
    """
    fs = get_feature_set(feature_set)
    bench_ret = benchmark_returns(benchmark) if benchmark is not None and fs.kind != "pair" else None
    items = _items(bars, fs, fundamentals)
    report = FeatureReport(feature_set=fs.key)
    frames: dict[str, pd.DataFrame] = {}
    total = len(items)
    todo = items
    keys: dict[str, str | None] = {}
    if cache_dir is not None:
        bench_key = _fingerprint_frame(benchmark) if bench_ret is not None else "-"
        keys = {name: _item_key(fs, bars_, facts, bench_key) for name, bars_, facts in items}
        todo = []
        for item in items:
            name, key = item[0], keys[item[0]]
            hit = _cache_read(cache_dir, fs, name, key) if key is not None else None
            if hit is None:
                todo.append(item)
                continue
            frames[name], problems = hit
            report.cached.append(name)
            if problems:
                report.problems[name] = problems
    done = len(report.cached)
    if progress is not None:
        progress(done, total)
    n_cols = len(output_columns(fs))
    for batch, (block, lengths, problems_of, errors) in (_ray_batches if use_ray else _serial_batches)(todo, fs, bench_ret):
        start = 0
        for (name, bars_, _), n, problems, error in zip(batch, lengths, problems_of, errors, strict=True):
            values, start = block[start:start + n_cols * n].reshape(n_cols, n), start + n_cols * n
            if error is not None:
                report.failed[name] = error
                continue
            frames[name] = frame_of(values, bars_.index, fs.kind)
            report.computed.append(name)
            if problems:
                report.problems[name] = problems
            if keys.get(name) is not None:
                _cache_write(cache_dir, fs, name, keys[name], bars_.index, values, problems)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    ordered = {name: frames[name] for name, _, _ in items if name in frames}
    return UniverseFeatures(ordered, report)


def _items(bars: dict[str, pd.DataFrame], fs: FeatureSet, fundamentals: pd.DataFrame | None) -> list[_Item]:
    if fs.kind == "pair":
        return [(f"{a}/{b}", pair_bars(bars[a], bars[b]), None) for a, b in candidate_pairs(bars)]
    if fs.kind == "fundamental" and fundamentals is not None:
        by_symbol = dict(iter(fundamentals.groupby("symbol", sort=False)))
        return [(s, frame, by_symbol.get(s)) for s, frame in bars.items()]
    return [(s, frame, None) for s, frame in bars.items()]


def run_batch(fs_key: str, items: list[_Item], bench_ret: pd.Series | None) -> _Block:
    """Compute a batch as one flat block of plain numbers (one buffer through the object
    store); the driver cuts it into frames on the bars' own index."""
    return compute_block([(frame, facts) for _, frame, facts in items], get_feature_set(fs_key), bench_ret)


def _serial_batches(todo: list[_Item], fs: FeatureSet, bench_ret: pd.Series | None):
    for start in range(0, len(todo), SERIAL_BATCH):
        batch = todo[start:start + SERIAL_BATCH]
        yield batch, run_batch(fs.key, batch, bench_ret)


@cache
def _remote_batch():
    import ray

    return ray.remote(num_cpus=1)(run_batch)


def _ray_batches(todo: list[_Item], fs: FeatureSet, bench_ret: pd.Series | None):
    """As many batches as CPUs (a multiple of it when the results would not fit), each
    batch's input put in the object store once; blocks are yielded as they finish."""
    if not todo:
        return
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    result_bytes = 8 * len(output_columns(fs)) * sum(len(f) for _, f, _ in todo if isinstance(f, pd.DataFrame))
    rounds = max(1, math.ceil(result_bytes / (cpus * MAX_BATCH_BYTES)))
    n_batches = max(1, min(math.ceil(len(todo) / MIN_BATCH), cpus * rounds))
    size = math.ceil(len(todo) / n_batches)
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    bench_ref = ray.put(bench_ret)
    remote = _remote_batch()
    pending = {remote.remote(fs.key, ray.put(batch), bench_ref): batch for batch in batches}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        block, lengths, problems, errors = ray.get(ready[0])
        # copy out of the object store (one memcpy) so finished batches free it for the running ones
        yield pending.pop(ready[0]), (block.copy(), lengths, problems, errors)
        del ready, block


def _fingerprint_frame(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return "-"
    h = hashlib.blake2b(digest_size=16)
    h.update(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


def _item_key(fs: FeatureSet, bars: pd.DataFrame, facts: pd.DataFrame | None, bench_key: str) -> str | None:
    """The cache key, or None (not cached) for input that is not numeric bars; the
    computation then reports what is wrong with it."""
    try:
        values = np.ascontiguousarray(bars.to_numpy(dtype=float)).tobytes()
        stamps = np.ascontiguousarray(bars.index.asi8).tobytes()
    except (TypeError, ValueError, AttributeError):
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(fs.fingerprint.encode())
    h.update(bench_key.encode())
    h.update(",".join(map(str, bars.columns)).encode())
    h.update(stamps)
    h.update(values)
    h.update(_fingerprint_frame(facts).encode())
    return h.hexdigest()


def _cache_path(cache_dir: Path, fs: FeatureSet, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{fs.name}-v{fs.version}" / quote(name, safe="") / f"{key}.parquet"


def _cache_read(cache_dir: Path, fs: FeatureSet, name: str, key: str) -> tuple[pd.DataFrame, list[str]] | None:
    path = _cache_path(cache_dir, fs, name, key)
    if not path.exists():
        return None
    table = pq.ParquetFile(path).read(use_threads=False)
    meta = json.loads(table.schema.metadata[_META_KEY])
    stamps = table.column(0)
    index = pd.DatetimeIndex(stamps.to_numpy(), name=meta["index"]).tz_localize("UTC").tz_convert(stamps.type.tz)
    values = np.empty((table.num_columns - 1, table.num_rows))
    for i, column in enumerate(table.columns[1:]):
        values[i] = column.to_numpy()
    return pd.DataFrame(values.T, index=index, columns=pd.Index(table.column_names[1:]), copy=False), meta["problems"]


def _cache_write(cache_dir: Path, fs: FeatureSet, name: str, key: str, index: pd.DatetimeIndex,
                 values: np.ndarray, problems: list[str]) -> None:
    """Write ``values`` (columns x bars) whole (to a temporary name, then renamed), then drop the
    symbol's stale entries.

    Plain float columns, no dictionary or statistics: the cache is read whole, by this module.
    """
    path = _cache_path(cache_dir, fs, name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"problems": problems, "index": index.name})
    table = pa.Table.from_arrays(
        [pa.array(index), *map(pa.array, values)], names=["__ts__", *output_columns(fs)],
    ).replace_schema_metadata({_META_KEY: meta.encode()})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="none", use_dictionary=False, write_statistics=False)
    tmp.replace(path)
    for stale in path.parent.glob("*.parquet"):
        if stale != path:
            stale.unlink(missing_ok=True)
