"""nemo_flm: the FLM-101B recipe on NeMo 3.0 and megatron-core."""

from nemo.core.classes.common import ALLOWED_TARGET_PREFIXES

# NeMo's restore_from only instantiates targets on its allow-list: add ours, never disable the check.
if "nemo_flm." not in ALLOWED_TARGET_PREFIXES:
    ALLOWED_TARGET_PREFIXES.append("nemo_flm.")

__version__ = "0.1.0"
