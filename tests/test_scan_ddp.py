"""Diffusion training under DDP (gloo, 2 processes): the same model as one process with the same
global batch, checkpoints interchangeable with single-process runs, one writer of files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lftml.diffusion.distributed import DistributedContext, shard_rows
from lftml.diffusion.training import TrainConfig, checkpoint_path, train
from lftml.lattice import Lattice
from lftml.theories import FreeScalar

THEORY = FreeScalar(Lattice((8, 8)), 0.5)
# warmup = 1: the full learning rate from the first step, so a rank that trains on its half batch
# alone moves the weights by ~lr = 1e-3 per step, far outside the float32 tolerance below
CFG = dict(steps=6, batch_size=16, preset="tiny", seed=3, checkpoint_every=3, warmup=1, lr=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _rank_main(rank: int, world: int, port: int, data_path: str, runs: list) -> None:
    """One rank of a 2-process gloo group: the training runs ``runs`` = [(out, max_steps_this_call,
    resume)] one after another (one process start-up for all of them)."""
    _join(rank, world, port)
    from lftml.diffusion import distributed

    data = np.load(data_path)
    for out, steps_this_call, resume in runs:
        res = train(data, out, TrainConfig(**CFG), theory=THEORY.to_dict(), progress=False, device="cpu",
                    max_steps_this_call=steps_this_call, resume=resume)
        if rank == 1:  # the non-writer's model, to compare with rank 0's file
            torch.save(res.model.net.state_dict(), out + ".rank1")
    distributed.context().close()


def _ddp(data_path: Path, runs: list) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(data_path), [(str(o), k, r) for o, k, r in runs]), nprocs=2,
             join=True)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from lftml.diffusion.model import load_model

    return load_model(path).net.state_dict()


def _close(a: dict, b: dict, atol: float = 2e-6) -> float:
    worst = 0.0
    for k, v in a.items():
        if v.dtype.is_floating_point:
            worst = max(worst, float((v - b[k]).abs().max()))
    assert worst < atol, f"max |w_ddp - w_single| = {worst:.3g} >= {atol}"
    print(f"max |w_a - w_b| = {worst:.3g}")
    return worst


def test_shards_cover_the_global_batch_once():
    """Rows r, r + N, ...: every row of the global batch on exactly one rank (also 3 ranks, 16 rows)."""
    for world in (1, 2, 3):
        rows = torch.cat([shard_rows(16, r, world) for r in range(world)])
        assert sorted(rows.tolist()) == list(range(16))
    assert not DistributedContext().distributed and DistributedContext().is_writer


def _shard_loss(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: the training loss (tsm target, 2 noise draws, odd global batch of 7) through
    ``DistributedContext.shard``; saves the network inputs this rank evaluated (own rows only),
    the loss and the summed gradients."""
    _join(rank, world, port)
    from lftml.diffusion import distributed

    ctx = distributed.context(torch.device("cpu"))
    model, x, f, ps = _tiny_model_and_batch()
    inputs, loss, grads = _loss_and_grads(model, x, f, ps, ctx)
    torch.save({"inputs": inputs, "loss": loss, "grads": grads}, f"{out_dir}/rank{rank}.pt")
    ctx.close()


def _tiny_model_and_batch():
    from lftml.diffusion.model import DataScaling, ScoreModel
    from lftml.diffusion.nets import UNet, preset
    from lftml.diffusion.sde import VESDE

    x = THEORY.sample(7, torch.Generator().manual_seed(1)).to(torch.float32)
    net = UNet(preset("tiny", ndim=2), generator=torch.Generator().manual_seed(2))
    ps = ScoreModel.estimate_power_spectrum(x).float()
    model = ScoreModel(net, VESDE(25.0, 1e-5), (8, 8), DataScaling.fit(x.numpy()), None, {},
                       parametrization="gaussian", sigma_data=float(x.std()), power_spectrum=ps)
    f = -x  # any force-shaped tensor: the blended target's second input
    return model, x, f, ps


def _loss_and_grads(model, x, f, ps, ctx):
    from lftml.diffusion.losses import dsm_loss

    seen = []

    def recording(xt, t):
        seen.append((xt.detach().clone(), t.detach().clone()))
        return model(xt, t)

    score_fn = recording if ctx is None else ctx.shard(recording)
    loss = dsm_loss(score_fn, x, model.sde, torch.Generator().manual_seed(4), "low", weighting="likelihood",
                    force0=f, power_spectrum=ps, sigma_data=model.sigma_data, noise_draws=2,
                    sigma_low=model.sigma_data)
    loss.backward()
    if ctx is not None:
        ctx.all_reduce_grads(model.net)
    (xt, t), = seen
    if ctx is not None:  # this rank's rows (the rest of the call is padding)
        m = shard_rows(2 * x.shape[0], ctx.rank, ctx.world_size).numel()
        xt, t = xt[:m], t[:m]
    grads = {k: p.grad.clone() for k, p in model.net.named_parameters()}
    return (xt, t), float(loss.detach()), grads


def test_rank_batches_are_a_partition_of_the_global_batch(tmp_path):
    """2 gloo ranks, global batch 7 configurations x 2 noise draws = 14 rows (7 per rank), target
    score matching: the network inputs (x_t, t) rank r evaluates are, bit for bit, rows r, r + 2, ...
    of what one process evaluates (same seed), so the union of the rank batches is the global batch,
    each row once; the loss is the same on both ranks and equals the one-process loss, and the
    summed gradients equal the one-process gradients (float32 tolerance rtol 1e-5, atol 1e-7; without
    the all-reduce the difference is 4e-2 absolute). Catches: ranks drawing their own noise (rows differ),
    overlapping or missing shards, a loss that is the rank's own mean (differs, gradient halved or
    doubled), a missing all-reduce (gradient of half the rows)."""
    import torch.multiprocessing as mp

    mp.spawn(_shard_loss, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model, x, f, ps = _tiny_model_and_batch()
    (xt1, t1), loss1, grads1 = _loss_and_grads(model, x, f, ps, None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    covered = torch.zeros(xt1.shape[0], dtype=torch.int64)
    for r, res in enumerate(ranks):
        rows = shard_rows(xt1.shape[0], r, 2)
        xt, t = res["inputs"]
        assert torch.equal(xt, xt1[rows]) and torch.equal(t, t1[rows])
        covered[rows] += 1
        assert res["loss"] == ranks[0]["loss"]  # bitwise the same loss on every rank
        assert res["loss"] == pytest.approx(loss1, rel=1e-6)
        for k, g in grads1.items():
            torch.testing.assert_close(res["grads"][k], g, rtol=1e-5, atol=1e-7)
    assert covered.tolist() == [1] * xt1.shape[0]


@pytest.mark.slow
def test_two_process_gloo_training_matches_one_process_with_the_same_global_batch(tmp_path):
    """6 steps, global batch 16, 2 gloo ranks (8 rows each) vs one process: losses and EMA weights
    agree to float32 rounding (measured max 3e-8 on 2 Dec 2026; tolerance 2e-6 absolute, while one rank training on
    its own half moves weights by ~1e-3 per step). Rank 1 holds the same model as the file rank 0
    wrote; only rank 0 writes files. A DDP checkpoint at step 3 resumed by a single process gives
    the 6-step single-process model, and a single-process checkpoint resumed under DDP too.
    Catches: no gradient all-reduce, mean instead of sum of the per-rank parts (loss halved), ranks
    drawing different noise, non-writers writing, a checkpoint format that differs under DDP."""
    data = THEORY.sample(256, torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    data_path = tmp_path / "data.npy"
    np.save(data_path, data)
    single = train(data, tmp_path / "single.pt", TrainConfig(**CFG), theory=THEORY.to_dict(), progress=False, device="cpu")
    # single-process checkpoint at step 3, to be finished under DDP
    train(data, tmp_path / "b.pt", TrainConfig(**CFG), theory=THEORY.to_dict(), progress=False, device="cpu",
          max_steps_this_call=3)
    _ddp(data_path, [(tmp_path / "ddp.pt", None, False), (tmp_path / "a.pt", 3, False), (tmp_path / "b.pt", None, True)])
    w_single, w_ddp = _weights(tmp_path / "single.pt"), _weights(tmp_path / "ddp.pt")
    _close(w_single, w_ddp)
    rank1 = torch.load(str(tmp_path / "ddp.pt") + ".rank1", weights_only=True)
    _close(w_ddp, rank1, atol=1e-12)  # the ranks hold the same model
    ddp_losses = np.loadtxt(tmp_path / "ddp_loss.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(ddp_losses, single.losses, rtol=2e-5)
    written = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp"))
    assert written == ["ddp.pt", "ddp.pt.ckpt", "ddp.pt.rank1", "ddp_loss.csv", "ddp_loss.png"]
    # single-process checkpoint at step 3 finished under DDP
    _close(w_single, _weights(tmp_path / "b.pt"))
    # DDP checkpoint at step 3 finished by a single process
    assert torch.load(checkpoint_path(tmp_path / "a.pt"), weights_only=True)["step"] == 3
    train(data, tmp_path / "a.pt", TrainConfig(**CFG), theory=THEORY.to_dict(), progress=False, device="cpu",
          resume=True)
    _close(w_single, _weights(tmp_path / "a.pt"))


@pytest.mark.slow
def test_torchrun_cli_has_one_writer(tmp_path):
    """`torchrun --nproc-per-node 2 -m lftml diffusion train ... --json`: exactly one JSON object on
    stdout (rank 0's), the model file readable by a single process, close to the one-process model."""
    from conftest import run_cli

    ens = tmp_path / "e.h5"
    run_cli("hmc", "--shape", "8", "8", "--m2", "0.5", "--chains", "8", "--n-configs", "32", "--therm", "20",
            "--out", ens, "--no-progress", "--json", check=True)
    args = ["diffusion", "train", "--data", str(ens), "--preset", "tiny", "--steps", "4", "--batch-size", "16",
            "--checkpoint-every", "2", "--device", "cpu", "--threads", "1", "--json"]
    run_cli(*args, "--out", tmp_path / "one.pt", check=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "lftml",
                           *args, "--out", str(tmp_path / "two.pt")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # one object: rank 1 printed nothing
    assert summary["steps"] == 4
    _close(_weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt"), atol=2e-6)
