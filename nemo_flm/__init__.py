"""nemo_flm: the FLM-101B recipe on NeMo 3.0 and megatron-core.

Importing the package imports nothing heavy, so that entry scripts can quiet expected third-party
noise (console.py) before NeMo and megatron-core load."""

__version__ = "0.1.0"
