"""Peak FLOPs for MFU on the GPUs Lightning's table lacks: FLM's A800 (312 TFLOP/s bf16 dense, as
the FLM-101B paper uses for its MFU) and the H200 (H100 SXM's 989.4 TFLOP/s bf16 dense)."""

import pytest
import torch

from nemo_flm.training.throughput import peak_flops


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("NVIDIA A800-SXM4-80GB", torch.bfloat16, 312e12),
        ("NVIDIA H200", torch.bfloat16, 989.4e12),
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, None),  # in Lightning's own table
    ],
)
def test_peak_flops_of_gpus_missing_from_lightning(monkeypatch, name, dtype, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(torch.device("cuda", 0), dtype) == expected


def test_no_peak_on_cpu():
    assert peak_flops(torch.device("cpu"), torch.float32) is None
