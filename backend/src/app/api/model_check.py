"""The one check of a model named through the API (an account's model, at creation or switched): the same
catalog check the default model's switch makes (`LLMService.check_model`), answered as HTTP errors before
anything is saved."""

from __future__ import annotations

from fastapi import HTTPException

from app.services.llm.llm_exceptions import ModelCatalogUnavailableError, ModelNotAvailableError
from app.services.llm.llm_service import LLMService


async def require_listed_model(llm: LLMService, model: str) -> None:
    """400 for text that cannot be a model slug, 404 for a model the endpoint's catalog does not list, 503 when
    the catalog cannot be read now. Call it outside any database transaction (it may ask the endpoint)."""
    try:
        usable = await llm.check_model(model)
    except ModelNotAvailableError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except ModelCatalogUnavailableError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    if not usable:
        raise HTTPException(status_code=400, detail=f"not a model name: {model!r}")
