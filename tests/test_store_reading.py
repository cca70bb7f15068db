"""Training reads its batches from the memory-mapped store, never a copy of the pool, and the
prefetch thread changes nothing about the numbers."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import torch

from faceattr.config import AugmentConfig
from faceattr.data import manifest
from faceattr.data.packed import StoreWriter
from faceattr.train.data import Prefetch, StoreImages, augment, epoch_batches, load_split, subset

N, SIZE = 600, 48  # 600 crops of 48 px: 4.1 MB of pixels


def _store(tmp_path) -> tuple[np.ndarray, object, object]:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    writer = StoreWriter(tmp_path / "store", capacity=N, size=SIZE)
    for crop in crops:
        writer.add(crop)
    rows = []
    for i in range(N):
        row = manifest.empty_record(f"p{i // 3}/{i}.jpg")
        row.update(identity=f"p{i // 3}", gender=i % 2, age=float(20 + i % 50))
        rows.append(row)
    writer.close(pd.DataFrame(rows))
    split = tmp_path / "split.csv"
    pd.DataFrame({"index": range(N), "split": ["train" if i % 5 else "val" for i in range(N)]}).to_csv(
        split, index=False
    )
    return crops, tmp_path / "store", split


def test_a_loaded_split_reads_the_mapped_store_without_copying_it(tmp_path) -> None:
    """``load_split`` used to copy the pool's pixels twice (gathered rows, then NCHW); now it
    allocates none of them: the peak of Python-heap (numpy) allocations while loading stays
    far below one copy, and batches are read when indexed."""
    crops, store, split = _store(tmp_path)
    pool_bytes = crops[[i for i in range(N) if i % 5]].nbytes
    tracemalloc.start()
    try:
        data = load_split(store, split, ("train",))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < pool_bytes / 4, f"loading allocated {peak} bytes for a pool of {pool_bytes}"
    assert isinstance(data.images, StoreImages) and isinstance(data.images.faces, np.memmap)
    rows = np.array([i for i in range(N) if i % 5])
    idx = torch.tensor([5, 0, 17, 3])
    want = torch.from_numpy(crops[rows[idx.numpy()]]).permute(0, 3, 1, 2)
    assert torch.equal(data.images[idx], want) and data.images[idx].is_contiguous()
    assert torch.equal(data.images[7], want[0].new_tensor(crops[rows[7]]).permute(2, 0, 1))
    assert torch.equal(data.images[2:4], torch.from_numpy(crops[rows[2:4]]).permute(0, 3, 1, 2))
    assert data.images.shape == (len(rows), 3, SIZE, SIZE) and data.size == SIZE
    part = subset(data, 10, seed=0)  # a data-efficiency subset is still unread rows of the store
    assert isinstance(part.images, StoreImages) and len(part.images) == len(part.gender)
    assert torch.equal(part.images[[0]][0], torch.from_numpy(crops[part.rows[0]]).permute(2, 0, 1))


def _draws(prefetch: bool, steps: int | None, background: bool = True) -> list[tuple[list[int], torch.Tensor]]:
    """Each step's indices and its augmentation draw, with a generator shared by the batch order
    (a new shuffled pass draws from it) and the augmentation, as in training."""
    gen = torch.Generator().manual_seed(7)
    aug = AugmentConfig()
    out = []
    batches = epoch_batches(50, 16, gen, steps)
    pairs = Prefetch(batches, lambda idx: idx * 2, background) if prefetch else ((i, i * 2) for i in batches)
    for idx, fetched in pairs:
        assert torch.equal(fetched, idx * 2)
        x, _ = augment(torch.zeros(len(idx), 3, 8, 8), torch.zeros(len(idx), 5, 2), aug, gen)
        if prefetch:
            pairs.ahead()  # after the step's own draws, as the training loops call it
        out.append((idx.tolist(), x.sum()))
    return out


def test_prefetching_keeps_the_random_numbers_in_their_order() -> None:
    """With steps spanning several shuffled passes (a frac<P> variant under the steps budget),
    drawing the next pass before a step's augmentation would change every number after it."""
    for steps in (None, 11):
        plain, fetched = _draws(False, steps), _draws(True, steps)
        assert [i for i, _ in plain] == [i for i, _ in fetched]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(plain, fetched, strict=True))


def test_inline_gathering_on_the_cpu_trains_the_same_batches_with_the_same_numbers() -> None:
    """On the CPU the next batch is gathered inline (a thread beside the step's OpenMP threads
    slowed the 32-px default's epochs): the same batches, the same augmentation draws."""
    for steps in (None, 11):
        threaded, inline = _draws(True, steps), _draws(True, steps, background=False)
        assert [i for i, _ in threaded] == [i for i, _ in inline]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(threaded, inline, strict=True))
    assert [int(i) for i, _ in Prefetch([torch.tensor([i]) for i in range(3)], lambda i: i, False)] == [0, 1, 2]


def test_prefetch_without_ahead_calls_still_yields_every_batch() -> None:
    batches = [torch.tensor([i]) for i in range(5)]
    assert [int(i) for i, _ in Prefetch(batches, lambda i: i)] == list(range(5))
    assert list(Prefetch([], lambda i: i)) == []


def test_prefetch_on_a_device_gathers_inline_on_the_cpu_and_ahead_beside_an_accelerator() -> None:
    batches = [torch.tensor([i]) for i in range(3)]
    cpu = Prefetch.on(torch.device("cpu"), batches, lambda i: i)
    assert not cpu._background and [int(i) for i, _ in cpu] == [0, 1, 2]
    assert Prefetch.on(torch.device("cuda"), batches, lambda i: i)._background  # a device object; no GPU needed
