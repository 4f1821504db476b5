"""Strategy models: XGBoost predictors, purged walk-forward folds and a final holdout, Ray Tune
+ Optuna tuning, deflated Sharpe, and honest promotion to the model registry.

The model file contract (one ``.ubj`` XGBoost Booster with ``feature_names`` and the
``lab_task``/``lab_strategy``/``lab_label``/``lab_asset_class`` attributes) lives in
``predictor``; ``load_predictor`` is all a consumer needs.

Training end to end (``pipeline``) and promotion (``promotion``) are imported from their
modules: they bring the database and registry stack, which Tune's trial workers and Serve's
replicas, importing this package, should not pay for (about 0.3 s per worker process here).
"""

from lab.models.folds import Fold, walk_forward_folds, walk_forward_holdout
from lab.models.predictor import BasePredictor, CryptoPredictor, StockPredictor, XGBPredictor, load_predictor
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.models.tuning import TuningResult, tune_strategy

__all__ = [
    "BasePredictor", "XGBPredictor", "StockPredictor", "CryptoPredictor", "load_predictor",
    "Fold", "walk_forward_folds", "walk_forward_holdout",
    "TuningResult", "tune_strategy", "sharpe_ratio", "deflated_sharpe_ratio",
]
