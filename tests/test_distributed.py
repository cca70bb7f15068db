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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_train(rank: int, world: int, port: int, pipeline: dict, out_dir: str) -> None:
    """One torchrun-like rank: fine-tune an uncertainty-weighted variant and pretrain a trunk with
    its margin head, keeping every trained module's final parameters, history and step count."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from faceattr.config import FinetuneConfig, PretrainIdentityConfig, load_section
    from faceattr.distributed import init_distributed
    from faceattr.train import finetune as ft
    from faceattr.train import pretrain as pt
    from faceattr.variants import parse_variant

    init_distributed()
    captured = {}

    def keep(module, name):
        real = module.fit

        def fit(**kw):
            history = real(**kw)
            state = kw["optimizer"].state_dict()["state"]
            captured[name] = {
                "params": {
                    n: {k: p.detach().clone() for k, p in m.named_parameters()} for n, m in kw["modules"].items()
                },
                "history": history,
                "steps": int(next(iter(state.values()))["step"]),
            }
            return history

        module.fit = fit

    keep(ft, "finetune")
    keep(pt, "pretrain")
    cpu = torch.device("cpu")
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    ft.finetune(
        parse_variant("face_resnet18-none-gender+age+landmarks-uw"),
        cfg,
        seed=0,
        store=pipeline["store"],
        split_file=pipeline["split.csv"],
        identity_checkpoint=None,
        device=cpu,
        resume_path=None,
        on_epoch=lambda row: None,
    )
    pt.pretrain_identity(
        load_section(pipeline["params"], "pretrain_identity", PretrainIdentityConfig),
        seed=0,
        store=pipeline["store"].parent / "pretrain",
        split_file=pipeline["splits"] / "pretrain.csv",
        device=cpu,
        resume_path=None,
        on_epoch=lambda row: None,
    )
    torch.save(captured, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_end_with_equal_weights_of_every_module_and_a_finished_schedule(pipeline, tmp_path) -> None:
    """DDP wrapped only the trunk/model: the margin head and the uncertainty weights got no averaged
    gradients and drifted apart per rank, and the schedule counted the whole set's steps while a
    rank ran half of them, so the learning rate never reached its end. Now every trained
    parameter is under DDP and the steps are counted per shard."""
    import pandas as pd

    from faceattr.config import FinetuneConfig, PretrainIdentityConfig, load_section
    from faceattr.train.loop import lr_at

    paths = {k: v for k, v in pipeline.items() if k in ("params", "store", "split.csv", "splits")}
    mp.spawn(_rank_train, args=(2, _free_port(), paths, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    sections = {"finetune": ("finetune_multitask", FinetuneConfig, pipeline["split.csv"], "train"),
                "pretrain": ("pretrain_identity", PretrainIdentityConfig, pipeline["splits"] / "pretrain.csv",
                             "pretrain")}  # fmt: skip
    for run, (section, kind, split_file, pool) in sections.items():
        a, b = ranks[0][run], ranks[1][run]
        assert set(a["params"]) == ({"model", "weighting"} if run == "finetune" else {"trunk", "head"})
        for module, params in a["params"].items():
            for name, value in params.items():
                assert torch.equal(value, b["params"][module][name]), f"{run}: {module}.{name} differs across ranks"
        optim = load_section(pipeline["params"], section, kind).optim
        rows = int((pd.read_csv(split_file)["split"] == pool).sum())
        per_rank = -(-(rows // 2) // optim.batch_size)
        total = per_rank * optim.epochs
        assert a["steps"] == b["steps"] == total, run
        warmup = int(optim.warmup_epochs * per_rank)
        assert a["history"][-1]["lr"] == pytest.approx(lr_at(total - 1, total, warmup, optim)), f"{run}: schedule"


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
