"""Models: where base models come from (packaged default, HF folder or id, GGUF file), aliases, and the `ft:` naming. Imports nothing else of ours."""

from tunery.models.aliases import list_base_models, load_aliases
from tunery.models.errors import ModelConversionError, ModelNotFoundError, TuneryModelError
from tunery.models.loading import load_model, load_tokenizer
from tunery.models.naming import (
    ModelName,
    checkpoint_model_name,
    fine_tuned_model_name,
    legacy_fine_tuned_model_name,
    parse_model_name,
    validate_suffix,
)
from tunery.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "ModelConversionError",
    "ModelName",
    "ModelNotFoundError",
    "ResolvedModel",
    "TuneryModelError",
    "checkpoint_model_name",
    "fine_tuned_model_name",
    "legacy_fine_tuned_model_name",
    "list_base_models",
    "load_aliases",
    "load_model",
    "load_tokenizer",
    "parse_model_name",
    "resolve_model",
    "validate_suffix",
]
