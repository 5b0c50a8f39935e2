"""Tests only: run megatron-core's GPU training machinery (schedules, DDP buffers, the distributed
optimizer, sequence-parallel mappings) on CPU processes joined by gloo.

Those components ask for CUDA in a handful of places (docs/flm_facts.md §7): tensors created on
"cuda" or on `torch.cuda.current_device()`, `Tensor.cuda()`, `Tensor.type()` names checked against
'torch.cuda.FloatTensor', streams and synchronize, and the CUDA RNG tracker's fork(). Inside
`cuda_on_cpu()` those requests land on the CPU; everything is restored on exit. The library never
does this: it is how a 2-core CI machine exercises the code that runs on the GPUs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode


def _is_cuda(device) -> bool:
    if isinstance(device, int):
        return True
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


class _CudaToCpu(TorchFunctionMode):
    """Every `device=` that names CUDA (or a bare GPU index) becomes the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to,) and args and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


_CPU_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float16: "torch.cuda.HalfTensor",
}


def _cuda_type(self, *args, **kwargs):
    if args or kwargs:
        return _ORIGINAL_TYPE(self, *args, **kwargs)
    return _CPU_TYPE_NAMES.get(self.dtype) or _ORIGINAL_TYPE(self)


_ORIGINAL_TYPE = torch.Tensor.type


class _Stream:
    def wait_stream(self, other) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def record_event(self, *args, **kwargs):
        return None


@contextlib.contextmanager
def cuda_on_cpu() -> Iterator[None]:
    """Run the body with CUDA requests served by the CPU (see the module docstring)."""
    stream = _Stream()
    patches = [
        # a CUDA build of torch on a machine without a GPU answers as a CPU build does (the
        # patched device_count below would otherwise make it claim a device)
        mock.patch("torch.cuda.is_available", lambda: False),
        mock.patch("torch.cuda.current_device", lambda: "cpu"),  # also seen by autograd threads
        mock.patch("torch.cuda.device_count", lambda: 1),
        mock.patch("torch.cuda.synchronize", lambda *a, **k: None),
        mock.patch("torch.cuda.current_stream", lambda *a, **k: stream),
        mock.patch("torch.cuda.default_stream", lambda *a, **k: stream),
        mock.patch("torch.cuda.Stream", lambda *a, **k: _Stream()),
        mock.patch("torch.cuda.stream", lambda *a, **k: contextlib.nullcontext()),
        mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self),
        mock.patch.object(torch.Tensor, "type", _cuda_type),
        mock.patch(
            "megatron.core.tensor_parallel.random.CudaRNGStatesTracker.fork",
            lambda self, *a, **k: contextlib.nullcontext(),
        ),
    ]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        stack.enter_context(_CudaToCpu())
        yield
