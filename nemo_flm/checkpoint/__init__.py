"""Checkpoint storage: sharded safetensors directories, Lightning checkpoint IO, .nemo weights."""
