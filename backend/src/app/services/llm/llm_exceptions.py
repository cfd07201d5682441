"""The decision engine's exception hierarchy (the seed's names, with the detail callers need)."""

from __future__ import annotations

from app.core.errors import TradingAgentError


class DecisionEngineError(TradingAgentError):
    """Base exception for decision engine errors."""


class LLMAPIError(DecisionEngineError):
    """LLM API communication errors."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class LLMResponseError(DecisionEngineError):
    """The model answered, but not with a usable decision (empty, truncated, no JSON, invalid JSON)."""

    def __init__(self, message: str, *, failure: str, raw: str | None) -> None:
        super().__init__(message)
        self.failure = failure
        self.raw = raw


class ValidationError(DecisionEngineError):
    """Decision validation errors."""


class ContextBuildingError(DecisionEngineError):
    """Context building errors."""


class InsufficientDataError(ContextBuildingError):
    """Insufficient data for decision making (for one asset, named in `symbol`)."""

    def __init__(self, message: str, *, symbol: str | None = None) -> None:
        super().__init__(message)
        self.symbol = symbol


class AccountNotFoundError(DecisionEngineError):
    """No account with that id."""

    def __init__(self, account_id: int) -> None:
        super().__init__(f"account {account_id} does not exist")
        self.account_id = account_id


class DecisionNotFoundError(DecisionEngineError):
    """No decision with that id (or none the caller may see)."""

    def __init__(self, decision_id: int) -> None:
        super().__init__(f"decision {decision_id} does not exist")
        self.decision_id = decision_id


class UnknownAssetError(DecisionEngineError):
    """An asset that is not configured for trading."""


class DecisionRateLimitedError(DecisionEngineError):
    """The account used its forced decisions for now."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelNotAvailableError(DecisionEngineError):
    """A model slug the endpoint's model catalog does not list (a switch to it would fail every call)."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class ModelCatalogUnavailableError(DecisionEngineError):
    """The endpoint's model catalog cannot be read now, so a model cannot be checked (nothing was changed)."""


class ExperimentError(DecisionEngineError):
    """An experiment refused (with the reason: nothing was stored) or a request its state refuses."""


class ExperimentNotFoundError(ExperimentError):
    """No experiment with that id (or none the caller may see)."""

    def __init__(self, experiment_id: int) -> None:
        super().__init__(f"experiment {experiment_id} does not exist")
        self.experiment_id = experiment_id


class ExperimentForbiddenError(ExperimentError):
    """The caller may see the experiment but not change it."""
