"""Shared test setup: never reach a model hub, never touch the user's Tunery home."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Integration fixtures of the API (a real `tunery serve`, SDK clients, spec validation).
from api_support import api_server, legacy, openai_client, spec  # noqa: E402,F401
