"""Features for a whole universe: batched Ray tasks, a Parquet cache per symbol, a report.

Why tasks and not Ray Data: the unit of work is a small in-memory frame per symbol and the
result is wanted back in the driver as frames; Ray Data's per-block overhead and its
conversion to Arrow blocks would cost more than the indicators. Symbols are split into as
many batches as CPUs (so each task does far more work than its dispatch, about 0.5 ms); a
batch travels as plain arrays (``prepare``: views of the bars' own blocks, put in the object
store once, never pickled frames), each task returns one flat numeric block, and the frames
are views of that block where it lies in the object store (no copy) when the results fit in
three quarters of the local store; otherwise each block is copied out as it arrives, so finished
batches free the store for the running ones. Frames of a universe run are read-only views
whichever way they were made (copy one to change it). Results are gathered as batches
finish (for the progress bar).

The cache holds one Parquet file per symbol under ``<cache_dir>/<set>/<symbol>/<key>.parquet``;
the key is a fingerprint of the symbol's bars, the benchmark, its fundamentals and the
feature set's version, so an unchanged symbol is read back and never recomputed, and a
changed bar recomputes that symbol only. The driver reads and writes the cache (workers of a
remote cluster need not share its disk); keys are hashed and files read on a thread per CPU
(hashing and Parquet decoding release the GIL).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple, get_args
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lab.config import AssetClass
from lab.errors import DataError
from lab.features._compute import (
    Prepared,
    benchmark_returns,
    compute_block,
    frame_of,
    gap_problem,
    output_columns,
    pair_bars,
    prepare,
)
from lab.features._sets import FeatureSet, get_feature_set

__all__ = ["FeatureReport", "UniverseFeatures", "compute_universe_features", "candidate_pairs"]

#: symbols per Ray task at least: each does >= 10x its dispatch cost
MIN_BATCH = 8
#: bytes of results per Ray task at most (a 2,520-bar symbol is about 0.7 MB), so the
#: batches in flight fit the object store
MAX_BATCH_BYTES = 192 * 1024**2
#: symbols per block in the serial path
SERIAL_BATCH = 64
_META_KEY = b"lab.features"
#: what a cache entry holds; a new layout misses every older entry (2: the problems hold no gap
#: line, as a gap depends on the asset class given, which the key does not cover)
_CACHE_LAYOUT = 2

Progress = Callable[[int, int], None]


class _Item(NamedTuple):
    name: str
    index: pd.DatetimeIndex
    prepared: Prepared


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
    """{symbol: feature frame}, plus ``report`` (a FeatureReport). The frames are read-only
    views of the computed (or read) blocks: copy one to change it."""

    def __init__(self, frames: dict[str, pd.DataFrame], report: FeatureReport):
        super().__init__(frames)
        self.report = report


def candidate_pairs(symbols: Iterable[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct symbols, in sorted order."""
    return list(itertools.combinations(sorted(set(symbols)), 2))


def compute_universe_features(
    bars: dict[str, pd.DataFrame], feature_set: str, *, benchmark: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None, asset_classes: Mapping[str, str] | None = None,
    cache_dir: Path | None = None, use_ray: bool = True, progress: Progress | None = None,
) -> UniverseFeatures:
    """Features of every symbol (every candidate pair "AAA/BBB" for a pair set), equal to the
    serial computation; never raises for one bad symbol: it is reported instead.

    ``fundamentals`` is the long ``fundamentals`` table (a ``symbol`` column);
    ``asset_classes`` each symbol's class ("stocks", "crypto"; a symbol not named is a
    stock), whose calendar its gaps are counted on; ``progress`` is called with (done,
    total). Call ``lab.runtime.ensure_ray()`` before ``use_ray=True``.
    """
    classes = dict(asset_classes or {})
    if unknown := sorted((s, c) for s, c in classes.items() if c not in get_args(AssetClass)):
        raise DataError("; ".join(f"{s}: unknown asset class {c!r}" for s, c in unknown)
                        + f" (known: {', '.join(get_args(AssetClass))})")
    fs = get_feature_set(feature_set)
    bench_ret = benchmark_returns(benchmark) if benchmark is not None and fs.kind != "pair" else None
    report = FeatureReport(feature_set=fs.key)
    items = _prepared(bars, fs, fundamentals, report)
    frames: dict[str, pd.DataFrame] = {}
    total = len(items) + len(report.failed)
    todo = items
    keys: dict[str, str] = {}
    if cache_dir is not None:
        bench_key = _fingerprint_frame(benchmark) if bench_ret is not None else "-"
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            found = list(pool.map(lambda item: _cache_lookup(cache_dir, fs, item, bench_key), items))
        todo = []
        for item, (key, hit) in zip(items, found, strict=True):
            keys[item.name] = key
            if hit is None:
                todo.append(item)
                continue
            frames[item.name], problems = hit
            report.cached.append(item.name)
            if problems:
                report.problems[item.name] = problems
    done = len(report.cached) + len(report.failed)
    if progress is not None:
        progress(done, total)
    n_cols = len(output_columns(fs))
    for batch, (block, lengths, problems_of, errors) in (_ray_batches if use_ray else _serial_batches)(todo, fs, bench_ret):
        block.flags.writeable = False
        start = 0
        for item, n, problems, error in zip(batch, lengths, problems_of, errors, strict=True):
            values, start = block[start:start + n_cols * n].reshape(n_cols, n), start + n_cols * n
            if error is not None:
                report.failed[item.name] = error
                continue
            frames[item.name] = frame_of(values, item.index, fs.kind)
            report.computed.append(item.name)
            if problems:
                report.problems[item.name] = problems
            if item.name in keys:
                _cache_write(cache_dir, fs, item.name, keys[item.name], values, problems)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    if fs.kind != "pair":  # a pair's bars are the days both legs have
        for item in items:
            if item.name in frames and (gap := gap_problem(item.prepared[1], classes.get(item.name, "stocks"))):
                report.problems.setdefault(item.name, []).append(gap)
    ordered = {item.name: frames[item.name] for item in items if item.name in frames}
    return UniverseFeatures(ordered, report)


def _prepared(bars: dict[str, pd.DataFrame], fs: FeatureSet, fundamentals: pd.DataFrame | None,
              report: FeatureReport) -> list[_Item]:
    """Every series as plain arrays (``prepare``); a frame that is not bars is reported failed.
    Series on one index object share one timestamps array (it travels once per batch)."""
    if fs.kind == "pair":
        named = [(f"{a}/{b}", pair_bars(bars[a], bars[b]), None) for a, b in candidate_pairs(bars)]
    elif fs.kind == "fundamental" and fundamentals is not None:
        by_symbol = dict(iter(fundamentals.groupby("symbol", sort=False)))
        named = [(s, frame, by_symbol.get(s)) for s, frame in bars.items()]
    else:
        named = [(s, frame, None) for s, frame in bars.items()]
    stamps_of: dict[int, np.ndarray] = {}
    items = []
    for name, frame, facts in named:
        try:
            values, stamps = prepare(frame, fs.kind, stamps_of.get(id(frame.index)))
        except Exception as exc:
            report.failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        stamps_of[id(frame.index)] = stamps
        items.append(_Item(name, frame.index, (values, stamps, facts)))
    return items


def run_batch(fs_key: str, items: list[Prepared], bench_ret: pd.Series | None) -> _Block:
    """Compute a batch as one flat block of plain numbers (one buffer through the object
    store); the driver cuts it into frames on the bars' own index."""
    return compute_block(items, get_feature_set(fs_key), bench_ret)


def _run_on_worker(fs_key: str, items: list[Prepared], bench_ret: pd.Series | None) -> _Block:
    """``run_batch`` in a Ray worker, into the block that worker process keeps from task to task.

    A fresh block costs its page faults (zeroing ~0.7 MB a symbol, a fifth of a task's time
    here); the kept one's pages stay mapped. Reusing it is safe because Ray copies a task's
    result into the object store when the task returns, before the process runs another
    task. Never used in the driver, whose frames are views of their block.
    """
    fs = get_feature_set(fs_key)
    size = len(output_columns(fs)) * sum(len(stamps) for _, stamps, _ in items)
    if _worker_block[0].size < size:
        _worker_block[0] = np.empty(0)  # free the old one first
        _worker_block[0] = np.empty(size)
    return compute_block(items, fs, bench_ret, room=_worker_block[0])


_worker_block = [np.empty(0)]


def _serial_batches(todo: list[_Item], fs: FeatureSet, bench_ret: pd.Series | None):
    for start in range(0, len(todo), SERIAL_BATCH):
        batch = todo[start:start + SERIAL_BATCH]
        yield batch, run_batch(fs.key, [item.prepared for item in batch], bench_ret)


@cache
def _remote_batch():
    import ray

    return ray.remote(num_cpus=1)(_run_on_worker)


def _ray_batches(todo: list[_Item], fs: FeatureSet, bench_ret: pd.Series | None):
    """As many batches as CPUs (a multiple of it when the results would not fit), each
    batch's arrays put in the object store once; blocks are yielded as they finish, in the
    object store when all the results fit in three quarters of the local store, else copied out."""
    if not todo:
        return
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    result_bytes = 8 * len(output_columns(fs)) * sum(len(item.index) for item in todo)
    rounds = max(1, math.ceil(result_bytes / (cpus * MAX_BATCH_BYTES)))
    n_batches = max(1, min(math.ceil(len(todo) / MIN_BATCH), cpus * rounds))
    size = math.ceil(len(todo) / n_batches)
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    in_place = result_bytes <= 0.75 * _local_store_bytes()
    bench_ref = ray.put(bench_ret)
    remote = _remote_batch()
    pending = {remote.remote(fs.key, ray.put([item.prepared for item in batch]), bench_ref): batch
               for batch in batches}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        block, lengths, problems, errors = ray.get(ready[0])
        yield pending.pop(ready[0]), (block if in_place else block.copy(), lengths, problems, errors)
        del ready, block


def _local_store_bytes() -> float:
    """The object store capacity of this (the driver's) node, where ``ray.get`` puts results."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return next((n["Resources"].get("object_store_memory", 0.0) for n in ray.nodes() if n["NodeID"] == node), 0.0)


def _fingerprint_frame(frame: pd.DataFrame | None) -> str:
    if frame is None or frame.empty:
        return "-"
    h = hashlib.blake2b(digest_size=16)
    h.update(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


def _item_key(fs: FeatureSet, prepared: Prepared, bench_key: str) -> str:
    """The cache key: the set's fingerprint, the benchmark's, and the bytes of the series'
    arrays (SHA-256, hardware accelerated where the CPU has it, which blake2b is not)."""
    values, stamps, facts = prepared
    h = hashlib.sha256()
    h.update(f"{_CACHE_LAYOUT}|{fs.fingerprint}|{bench_key}|{_fingerprint_frame(facts)}|{values.shape}".encode())
    h.update(stamps)
    h.update(values)
    return h.hexdigest()[:32]


def _cache_lookup(cache_dir: Path, fs: FeatureSet, item: _Item,
                  bench_key: str) -> tuple[str, tuple[pd.DataFrame, list[str]] | None]:
    key = _item_key(fs, item.prepared, bench_key)
    return key, _cache_read(cache_dir, fs, item, key)


def _cache_path(cache_dir: Path, fs: FeatureSet, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{fs.name}-v{fs.version}" / quote(name, safe="") / f"{key}.parquet"


def _cache_read(cache_dir: Path, fs: FeatureSet, item: _Item, key: str) -> tuple[pd.DataFrame, list[str]] | None:
    """The cached frame on the series' own index (the key covers its timestamps), read-only
    like a computed one: a view of the decoded column, no copy."""
    try:  # the file whole in one read, parsed from memory: faster here than pyarrow's own file reads
        data = _cache_path(cache_dir, fs, item.name, key).read_bytes()
    except FileNotFoundError:
        return None
    try:
        file = pq.ParquetFile(pa.BufferReader(data))
        values = file.read(use_threads=False).column(0).to_numpy()
    except pa.ArrowException:
        return None  # a damaged file (a crash mid-write on another filesystem): computed again, and replaced
    values.flags.writeable = False  # already so when zero-copy (one chunk), not when the chunks were joined
    meta = json.loads((file.metadata.metadata or {}).get(_META_KEY, b"{}"))
    columns = list(output_columns(fs))
    if meta.get("columns") != columns or values.size != len(columns) * len(item.index):
        return None  # not a file this module wrote: computed again, and replaced
    return frame_of(values.reshape(len(columns), -1), item.index, fs.kind), meta["problems"]


def _cache_write(cache_dir: Path, fs: FeatureSet, name: str, key: str, values: np.ndarray,
                 problems: list[str]) -> None:
    """Write ``values`` (columns x bars) whole (to a temporary name, then renamed), then drop the
    symbol's stale entries.

    One plain float column holding the frame's columns one after the other, named in the
    file's metadata, no dictionary or statistics: the cache is read whole, by this module, and
    Parquet's per-column cost (about 10 us a column to decode) would be most of the read of
    35 short columns. No timestamps either: the key covers them.
    """
    path = _cache_path(cache_dir, fs, name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"columns": list(output_columns(fs)), "problems": problems})
    table = pa.table({"values": values.ravel()}).replace_schema_metadata({_META_KEY: meta.encode()})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="none", use_dictionary=False, write_statistics=False)
    tmp.replace(path)
    for stale in path.parent.glob("*.parquet"):
        if stale != path:
            stale.unlink(missing_ok=True)
