"""``ServePredictionClient``: the trading engine's ``PredictionSource`` over the Serve endpoint.

It sends the frame's numeric columns with ``ignore_extra`` (the protocol says extra columns
are ignored), NaN as ``null`` (the service's missing-value rule) and infinities as they are,
so the service rejects them by name. Transport failures and gateway errors are retried (a
prediction is a pure function, so a retry is safe); every other error is raised at once with
the service's message.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from lab.errors import TradingError
from lab.trading.predictions import NoActiveModel, Payoff, Prediction

__all__ = ["ServePredictionClient", "PredictionServiceError"]

_RETRY_STATUSES = frozenset({502, 504})


class PredictionServiceError(TradingError):
    """The prediction service refused or failed a request; ``status`` is its HTTP status (0:
    it could not be reached)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"prediction service answered {status}: {message}" if status else message)


class _Retryable(Exception):
    def __init__(self, response: httpx.Response):
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


class ServePredictionClient:
    """Predictions from the lab's Serve app (``lab serve``); thread-safe, reuses connections."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout_s: float = 10.0, attempts: int = 3):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._retrying = Retrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(attempts),
                                  wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True)

    def predict(self, strategy: str, rows: pd.DataFrame) -> Prediction:
        numeric = rows.select_dtypes("number")
        values = numeric.to_numpy(dtype=np.float64)
        cells = np.where(np.isnan(values), None, values).tolist()
        records = [dict(zip(numeric.columns.astype(str), row, strict=True)) for row in cells]
        body = self._post({"strategy": strategy, "rows": records, "ignore_extra": True})
        version = int(body["model_version"])
        return Prediction(np.asarray(body["predictions"], dtype=np.float64), version,
                          Payoff.of(body.get("payoff"), strategy=strategy, version=version))

    def models(self) -> dict[str, Any]:
        """The version each strategy is served with, and any problem (``GET /models``)."""
        return self._send("GET", "/models")["strategies"]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServePredictionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/predict", content=json.dumps(payload))  # NaN-free; inf left for the server

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._retrying(self._attempt, method, path, **kwargs)
        except _Retryable as exc:
            response = exc.response
        except httpx.TransportError as exc:
            raise PredictionServiceError(0, f"could not reach the prediction service at {self._http.base_url} "
                                            f"({exc})") from None
        if response.status_code == 200:
            return response.json()
        detail = _detail(response)
        if detail.get("error") == "no_active_model":
            raise NoActiveModel(detail["message"])
        raise PredictionServiceError(response.status_code, detail.get("message") or response.text)

    def _attempt(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code in _RETRY_STATUSES or (response.status_code == 503 and not _detail(response)):
            raise _Retryable(response)
        return response


def _detail(response: httpx.Response) -> dict[str, Any]:
    """The service's error object ({"error", "message", ...}); empty for foreign errors."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return {}
    return detail if isinstance(detail, dict) else {"message": json.dumps(detail)}
