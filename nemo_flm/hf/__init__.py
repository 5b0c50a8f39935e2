"""Hugging Face export and import of FLM models in FLM-101B's format (config.json schema, GPT-2
weight names, remote code); remote_code/ is package data copied into every export."""
