"""The machine a run computed on, in words (the report, MLflow and evaluate.json name it)."""

from __future__ import annotations

import os

import torch


def describe_machine(device: torch.device) -> str:
    """What a run computed on, as the report and MLflow name it: the GPU's name, or the CPU's
    model, the cores this process may use and whether it computes bf16 natively."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        import platform

        model = platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    native = "with" if {"avx512_bf16", "amx_bf16"} & flags else "without"
    return f"{cores} cores of {model or 'an unknown CPU'} ({native} native bf16)"
