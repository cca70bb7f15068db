"""torchrun / DistributedDataParallel on CPU with gloo: shards, gradients, a whole stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from faceattr.distributed import DistInfo, shard, wrap
from faceattr.models.backbones import create_backbone

from .conftest import ROOT, TINY_VARIANTS, training_argv


def test_shards_are_disjoint_equal_and_cover_the_order() -> None:
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, DistInfo(r, 4, r)) for r in range(4)]
    assert {len(p) for p in parts} == {25}
    joined = torch.cat(parts)
    assert len(set(joined.tolist())) == 100 and set(joined.tolist()) == set(order[:100].tolist())
    assert torch.equal(shard(order, DistInfo()), order)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4).eval()  # eval: no batch stats


def _batch() -> torch.Tensor:
    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _rank_grads(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = _model()
    net = wrap(model, DistInfo(rank, world, rank), torch.device("cpu"))
    part = _batch()[rank * 4 : (rank + 1) * 4]
    net(part).pow(2).mean().backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters()}, out)
    torch.distributed.destroy_process_group()


def test_two_process_gradients_equal_one_process(tmp_path) -> None:
    mp.spawn(_rank_grads, args=(2, str(tmp_path / "init"), str(tmp_path / "g.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "g.pt", weights_only=True)
    model = _model()
    model(_batch()).pow(2).mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, atol=1e-6, rtol=1e-4, msg=f"gradient of {name}")


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (ROOT / ".venv/bin/torchrun").exists(), reason="torchrun not installed"
)
def test_torchrun_finetune_stage_on_two_cpu_processes(pipeline, tmp_path) -> None:
    variant = TINY_VARIANTS[1]
    out = tmp_path / "o.pt"
    env = {**os.environ, "FACEATTR_TRACKING": "off", "FACEATTR_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(ROOT / "stages" / "finetune_multitask.py"),
        "--variant",
        variant,
        "--seed",
        "0",
        "--identity",
        "unused.pt",
        *training_argv(pipeline, pipeline["params"], tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and (tmp_path / "r.pt").is_file()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "val_age_mae" in metrics and metrics["val_age_mae"] > 0
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 3, "one header and two epochs, written once"
