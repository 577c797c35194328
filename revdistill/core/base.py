"""What every estimator shares: the one ``NotFittedError`` and its check."""
from __future__ import annotations

from typing import Any

__all__ = ["NotFittedError", "check_is_fitted"]


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before ``fit``."""


def check_is_fitted(estimator: Any, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the learned ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet; call fit() or fit_moments() first"
        )
