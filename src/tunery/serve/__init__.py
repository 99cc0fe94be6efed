"""Inference: base models loaded once, adapters hot-loaded, batched generation."""
