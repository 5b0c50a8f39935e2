"""The FLM network: xPos math, the attention override, the layer spec and the GPTModel builder."""
