"""Evaluation: metrics, label parsing, few-shot prompts, running models through the serving engine, reports."""
