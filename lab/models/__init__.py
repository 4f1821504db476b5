"""Strategy models: XGBoost predictors, purged walk-forward folds, Ray Tune + Optuna tuning,
deflated Sharpe, and honest promotion to the model registry.

The model file contract (one ``.ubj`` XGBoost Booster with ``feature_names`` and the
``lab_task``/``lab_strategy``/``lab_label``/``lab_asset_class`` attributes) lives in
``predictor``; ``load_predictor`` is all a consumer needs.
"""

from lab.models.folds import Fold, walk_forward_folds
from lab.models.pipeline import TrainingOutcome, leaderboard, train_and_promote_all
from lab.models.predictor import BasePredictor, CryptoPredictor, StockPredictor, XGBPredictor, load_predictor
from lab.models.promotion import Gate, PromotionDecision, promote
from lab.models.scoring import deflated_sharpe_ratio, sharpe_ratio
from lab.models.tuning import TuningResult, tune_strategy

__all__ = [
    "BasePredictor", "XGBPredictor", "StockPredictor", "CryptoPredictor", "load_predictor",
    "Fold", "walk_forward_folds",
    "TuningResult", "tune_strategy", "sharpe_ratio", "deflated_sharpe_ratio",
    "Gate", "PromotionDecision", "promote",
    "TrainingOutcome", "train_and_promote_all", "leaderboard",
]
