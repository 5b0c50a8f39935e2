"""Inference: loading a trained network (loading.py), sampling (sampling.py), batched generation
and scoring with the xPos KV cache (generator.py), and the HTTP server (server.py)."""
