"""Masked Structural Growth (MSG) for FLM: operators on state dicts, masked spec leaves, the ramp."""
