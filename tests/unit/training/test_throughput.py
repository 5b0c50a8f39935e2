"""What the throughput monitor is given: each device's share of the global batch, and peak FLOPs
for MFU on the GPUs Lightning's table lacks: FLM's A800 (312 TFLOP/s bf16 dense, as the FLM-101B
paper uses for its MFU) and the H200 (H100 SXM's 989.4 TFLOP/s bf16 dense)."""

import logging

import pytest
import torch

from nemo_flm.training.throughput import peak_flops, throughput_monitor


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("NVIDIA A800-SXM4-80GB", torch.bfloat16, 312e12),
        ("NVIDIA H200", torch.bfloat16, 989.4e12),
        ("NVIDIA H200 NVL", torch.bfloat16, None),  # lower clocks than the SXM board: no MFU rather than a wrong one
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, None),  # in Lightning's own table
    ],
)
def test_peak_flops_of_gpus_missing_from_lightning(monkeypatch, name, dtype, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(torch.device("cuda", 0), dtype) == expected


def test_no_peak_on_cpu():
    assert peak_flops(torch.device("cpu"), torch.float32) is None


def test_each_device_is_credited_its_share_of_the_global_batch():
    """World totals (device x world) must be the global batch: 8 samples of 128 tokens over 4."""
    monitor = throughput_monitor(global_batch_size=8, seq_length=128, world_size=4)
    assert monitor.batch_size_fn(None) * 4 == 8 and monitor.length_fn(None) * 4 == 8 * 128


def test_no_monitor_when_the_batch_has_fewer_samples_than_processes(caplog):
    with caplog.at_level(logging.WARNING, logger="nemo_flm.training.throughput"):
        assert throughput_monitor(global_batch_size=4, seq_length=128, world_size=8) is None
    assert "throughput is not logged" in caplog.text
