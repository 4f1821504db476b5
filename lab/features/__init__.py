"""Features and labels: named, versioned feature sets computed per symbol (on Ray, cached as
Parquet), forward labels, and training frames. Every feature at bar t reads bars up to t only.
"""

from lab.features._compute import compute_features, output_columns, pair_bars
from lab.features._indicators import held_spread_z
from lab.features._labels import LABEL_KINDS, barrier_outcome, make_label, pair_forward_return
from lab.features._sets import FEATURE_SETS, FeatureSet, get_feature_set
from lab.features._store import store_indicators
from lab.features._training import create_training_data, labelled_rows, load_fundamentals
from lab.features._universe import FeatureReport, UniverseFeatures, candidate_pairs, compute_universe_features

__all__ = [
    "FEATURE_SETS", "FeatureSet", "get_feature_set", "output_columns",
    "compute_features", "pair_bars", "held_spread_z", "compute_universe_features", "candidate_pairs",
    "FeatureReport", "UniverseFeatures",
    "LABEL_KINDS", "make_label", "barrier_outcome", "pair_forward_return",
    "create_training_data", "labelled_rows", "load_fundamentals", "store_indicators",
]
