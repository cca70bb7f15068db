"""The forward loop over a split's crops, and the precision rule it applies."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from faceattr.train.data import Images, LabelCodec, Prefetch, batch_indices, to_input


def autocast(device: torch.device, half: bool) -> torch.autocast:
    """bf16 autocast on ``device`` where ``half`` (``faceattr.train.loop.bf16`` decides it), else
    a no-op: the one precision switch of every forward pass faceattr runs."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=half)


def forward_batches(
    net: nn.Module,
    images: Images,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
    *,
    half: bool = False,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor] | torch.Tensor]]:
    """``(row indices, outputs)`` of ``net`` for uint8 NCHW ``images``, in order: eval mode, no
    autograd, normalised by ``mean``/``std``, under :func:`autocast`. The next batch is gathered on
    a background thread on an accelerator, inline on the CPU (``Prefetch``). The caller's code
    between batches runs outside autocast."""
    net.eval()
    for idx, batch in Prefetch.on(device, batch_indices(len(images), batch_size, None), images.__getitem__):
        x = to_input(batch, device, mean, std, channels_last)
        with torch.no_grad(), autocast(device, half):
            outputs = net(x)
        yield idx, outputs


def decoded_batches(
    net: nn.Module,
    codec: LabelCodec,
    images: Images,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
    *,
    half: bool = False,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """:func:`forward_batches` of a multi-task network with its heads decoded (in fp32)."""
    for idx, outputs in forward_batches(
        net, images, device, mean, std, batch_size, half=half, channels_last=channels_last
    ):
        with torch.no_grad():
            pred = codec.decode(outputs)
        yield idx, pred
