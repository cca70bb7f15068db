"""MTCNN's three stages over a batch, with every candidate box cropped at once.

facenet-pytorch's ``detect_face`` runs P-Net over the image pyramid of a whole batch, but crops
and resizes the candidates for R-Net (24 px) and O-Net (48 px) one box at a time, with a Python
loop of ``interpolate(mode="area")`` calls: on CPU that loop, not the networks, is most of the
time on a batch of photos. Here each stage's crops are cut in one gather from a summed-area table
of the batch: area interpolation is the mean over each output pixel's bin (PyTorch's adaptive
average pooling bins), and a bin's sum is four lookups in the table. Same networks, thresholds,
pyramid, NMS and box arithmetic (facenet-pytorch's own helpers), so the detections are the same
up to float rounding (``tests/test_align.py`` compares them with ``MTCNN.detect``). R-Net and O-Net
run channels-last, which oneDNN's CPU pooling and convolutions prefer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def summed_area(imgs: torch.Tensor) -> torch.Tensor:
    """Summed-area table of images (B, C, H, W) with whole-number pixel values, flattened to rows
    of channels ((B·(H+1)·(W+1)), C): row (b·(H+1) + i)·(W+1) + j sums image b's rows < i and
    columns < j. Integer sums are exact (float sums of large photos would round): int32 where
    255·H·W fits, else int64."""
    b, c, h, w = imgs.shape
    dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
    table = imgs.permute(0, 2, 3, 1).to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return torch.nn.functional.pad(table, (0, 0, 1, 0, 1, 0)).reshape(b * (h + 1) * (w + 1), c)


def crop_area_resize(
    table: torch.Tensor,
    shape: tuple[int, int],
    image_inds: torch.Tensor,
    y0: np.ndarray,
    y1: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    size: int,
) -> torch.Tensor:
    """Rows ``y0:y1`` and columns ``x0:x1`` of image ``image_inds[k]``, area-resized to ``size``²,
    for every k at once: (K, C, size, size) float32, as ``interpolate(crop, size, mode="area")``.

    ``table`` is ``summed_area`` of the batch, whose images are ``shape`` (H, W). Output pixel i
    covers rows ``y0 + floor(i·h/size)`` to ``y0 + ceil((i+1)·h/size)`` (exclusive), h = y1 − y0:
    the bins of adaptive average pooling, which area interpolation is.
    """
    dev = table.device
    i = torch.arange(size, device=dev)
    h1, w1 = shape[0] + 1, shape[1] + 1

    def bins(start: np.ndarray, stop: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.as_tensor(start, device=dev, dtype=torch.long)[:, None]
        n = torch.as_tensor(stop, device=dev, dtype=torch.long)[:, None] - lo
        first = lo + torch.div(i * n, size, rounding_mode="floor")
        last = lo - torch.div(-(i + 1) * n, size, rounding_mode="floor")  # ceil
        return first, last

    rs, re = bins(y0, y1)
    cs, ce = bins(x0, x1)
    base = image_inds.to(dev, torch.long)[:, None, None] * h1
    rs, re, cs, ce = (base + rs[:, :, None]) * w1, (base + re[:, :, None]) * w1, cs[:, None, :], ce[:, None, :]

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, (rows + cols).reshape(-1))

    total = at(re, ce) - at(rs, ce) - at(re, cs) + at(rs, cs)
    area = ((re - rs) // w1 * (ce - cs)).clamp(min=1).reshape(-1, 1)
    out = total.to(torch.float32) / area
    return out.reshape(len(y0), size, size, -1).permute(0, 3, 1, 2).contiguous()


def _stage_input(table: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int):
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = pad(boxes, w, h)  # 1-based, clipped to the image, as facenet-pytorch crops them
    y0, x0 = y - 1, x - 1
    y1, x1 = np.maximum(ey, y0), np.maximum(ex, x0)  # an empty box gets an empty (zero) crop
    crops = crop_area_resize(table, (h, w), image_inds, y0, y1, x0, x1, size)
    return ((crops - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)


def _channels_last(mtcnn: Any) -> None:
    """The three networks channels-last, once: R-Net's and O-Net's max-pooling and convolutions over
    thousands of candidate crops run 2-3x faster so on CPU (oneDNN), P-Net's pyramid levels too."""
    if not getattr(mtcnn, "_faceattr_channels_last", False):
        for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
            net.to(memory_format=torch.channels_last)
        mtcnn._faceattr_channels_last = True


def detect_faces(mtcnn: Any, images: Sequence[Image.Image]) -> tuple[list, list, list]:
    """Boxes (N×4), probabilities (N) and landmarks (N×5×2) of each same-sized RGB image, in the
    format of ``MTCNN.detect(images, landmarks=True)`` (``None`` where no face), run with the
    networks and settings of ``mtcnn`` (a ``facenet_pytorch.MTCNN``)."""
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms,
        batched_nms_numpy,
        bbreg,
        fixed_batch_process,
        generateBoundingBox,
        imresample,
        rerec,
    )

    if any(im.size != images[0].size for im in images):
        raise ValueError("detect_faces needs images of one size per call")
    device = mtcnn.device
    threshold, factor = mtcnn.thresholds, mtcnn.factor
    _channels_last(mtcnn)
    with torch.no_grad():
        imgs = torch.as_tensor(np.stack([np.asarray(im, dtype=np.uint8) for im in images]), device=device)
        imgs = imgs.permute(0, 3, 1, 2).to(next(mtcnn.pnet.parameters()).dtype).contiguous()
        batch_size, (h, w) = len(imgs), imgs.shape[2:4]

        m = 12.0 / mtcnn.min_face_size
        minl = min(h, w) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale, minl = scale * factor, minl * factor

        # P-Net over the pyramid of the whole batch
        boxes_all, inds_all, picks, offset = [], [], [], 0
        for scale in scales:
            # area-resized from NCHW (1.6x faster than channels-last for 3 channels), then channels-last
            im_data = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
            im_data = im_data.contiguous(memory_format=torch.channels_last)
            reg, probs = mtcnn.pnet((im_data - 127.5) * 0.0078125)
            boxes_s, inds_s = generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
            boxes_all.append(boxes_s)
            inds_all.append(inds_s)
            picks.append(batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5) + offset)
            offset += boxes_s.shape[0]
        boxes, image_inds = torch.cat(boxes_all)[torch.cat(picks)], torch.cat(inds_all)[torch.cat(picks)]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * regw,
                boxes[:, 1] + boxes[:, 6] * regh,
                boxes[:, 2] + boxes[:, 7] * regw,
                boxes[:, 3] + boxes[:, 8] * regh,
                boxes[:, 4],
            ]
        ).permute(1, 0)
        boxes = rerec(boxes)

        table = summed_area(imgs) if len(boxes) else None
        # R-Net on every candidate's 24-px crop
        if len(boxes):
            out = fixed_batch_process(_stage_input(table, boxes, image_inds, w, h, 24), mtcnn.rnet)
            score = out[1].permute(1, 0)[1, :]
            ipass = score > threshold[1]
            boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ipass], out[0].permute(1, 0)[:, ipass].permute(1, 0)
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = rerec(bbreg(boxes, mv))

        # O-Net on the survivors' 48-px crops: scores, box refinement and the five landmarks
        points = torch.zeros(0, 5, 2, device=device)
        if len(boxes):
            out = fixed_batch_process(_stage_input(table, boxes, image_inds, w, h, 48), mtcnn.onet)
            out0, out1, out2 = (o.permute(1, 0) for o in out)
            score = out2[1, :]
            ipass = score > threshold[2]
            points = out1[:, ipass]
            boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ipass], out0[:, ipass].permute(1, 0)
            w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
            points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
            points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
            points = torch.stack((points_x, points_y)).permute(2, 1, 0)
            boxes = bbreg(boxes, mv)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes_np, points_np, inds_np = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    out_boxes, out_probs, out_points = [], [], []
    for b in range(batch_size):
        sel = inds_np == b
        if not sel.any():
            out_boxes.append(None)
            out_probs.append([None])
            out_points.append(None)
            continue
        out_boxes.append(boxes_np[sel, :4])
        out_probs.append(boxes_np[sel, 4])
        out_points.append(points_np[sel])
    return out_boxes, out_probs, out_points
