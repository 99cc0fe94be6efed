"""Errors raised by `tunery.models`; each message is one line a user can act on."""


class TuneryModelError(Exception):
    """Base class for every model-resolution, conversion or loading error."""


class ModelNotFoundError(TuneryModelError):
    """The spec names no model that is available on this machine without the network."""


class ModelConversionError(TuneryModelError):
    """A GGUF file could not be converted into a safetensors folder."""
