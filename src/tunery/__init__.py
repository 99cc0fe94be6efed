"""Tunery: a self-hosted fine-tuning service that speaks the OpenAI fine-tuning API."""

__version__ = "0.1.0"
