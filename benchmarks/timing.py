"""Timing for the benchmarks: medians of repeats, the contenders' repeats interleaved."""
import contextlib
import statistics
import time

import torch


def sync(device):
    """Wait for queued GPU work, so that a time covers the work and not its launch."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_times(fns, warmup, repeats, device):
    """{name: median seconds} of each callable in `fns`.

    Repeats are interleaved (a, b, c, a, b, c, ...), so that a slow spell of a shared
    machine slows every contender alike instead of the one running at that moment.

    Args:
        fns (dict[str, callable]): the contenders, each called with no argument.
        warmup (int): untimed calls of each first (allocator, oneDNN / cuDNN kernel choice).
        repeats (int): timed calls of each.
        device (str): "cuda..." synchronizes after each call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def autocast_dtypes(device):
    """The lower precisions worth measuring on `device` (bench.py, training.py, ap_contract.py).

    Args:
        device (str): "cpu" or "cuda...".

    Returns:
        tuple[torch.dtype]: (bfloat16,) on CPUs; (float16, bfloat16) on CUDA, bfloat16 only
        where torch.cuda.is_bf16_supported().
    """
    if not str(device).startswith("cuda"):
        return (torch.bfloat16,)
    return (torch.float16,) + ((torch.bfloat16,) if torch.cuda.is_bf16_supported() else ())


def dtype_name(dtype):
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def autocast_call(device, dtype, fn, *args):
    """fn(*args) under autocast to `dtype` (None: float32), entered for this call alone,
    as a user's step enters it (autocast's cache of cast weights lives one context)."""
    context = (torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None
               else contextlib.nullcontext())
    with context:
        return fn(*args)
