"""Tokenizer, built-in corpus, preprocessing into megatron indexed datasets, datasets and sampler."""
