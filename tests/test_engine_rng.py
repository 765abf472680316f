"""The per-chain Philox4x32-10 stream (lftml.samplers.rng): known answers, chain independence,
save/restore, distribution moments, path agreement, and the policy for files of the legacy stream."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch

import lftml.run as run_mod
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.run import RunConfig, run
from lftml.samplers import HMC, rng as R
from lftml.theories.phi4 import Phi4

from conftest import run_cli

# Random123 kat_vectors, the three philox4x32 10 lines: counter (4 words), key (2 words), expected (4 words)
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.fixture
def torch_path(monkeypatch):
    """Force the torch integer implementation on CPU (the CUDA code path)."""
    monkeypatch.setattr(R, "_DISABLED_NUMBA", True)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_philox_known_answers(backend):
    """Random123's known-answer vectors, for the numba kernel and the torch integer code (which also
    serves CUDA). Catches a wrong multiplier, Weyl constant, word order or key schedule (bumping the key
    before round 1 instead of before rounds 2..10 changes every word). numpy's ``np.random.Philox`` is
    Philox4x64, a different generator, so it cannot serve as a reference for the 32-bit words."""
    if backend == "numba":
        pytest.importorskip("numba")
    ctr = np.array([c for c, _, _ in KAT], dtype=np.uint64)
    key = np.array([k for _, k, _ in KAT], dtype=np.uint64)
    out = R.philox4x32_10(ctr, key, backend=backend)
    assert out.dtype == np.uint32
    assert out.tolist() == [e for _, _, e in KAT]


def test_numba_and_torch_paths_agree_bit_for_bit(monkeypatch):
    """The numba kernel and the torch integer path (CUDA's) give the same normals and uniforms bit for
    bit (same blocks, same polynomial log/sin/cos, IEEE basic operations only). Catches a block-order
    or interleaving mismatch, an off-by-one in the counter advance, odd-length handling, or a libm/SLEEF
    function slipping into one path."""
    pytest.importorskip("numba")
    a = R.ChainRNG.from_seed(7, 5)
    x = [a.normal((3, 7)), a.uniform_like((5,)), a.uniform(), a.normal((64, 64))]
    monkeypatch.setattr(R, "_DISABLED_NUMBA", True)
    b = R.ChainRNG.from_seed(7, 5)
    y = [b.normal((3, 7)), b.uniform_like((5,)), b.uniform(), b.normal((64, 64))]
    for u, v in zip(x, y):
        assert u.dtype == torch.float64 and torch.equal(u, v)
    assert np.array_equal(a.get_state(), b.get_state())
    assert a.get_state().tolist() == [11 + 3 + 1 + 2048] * 5  # ceil(21/2) + ceil(5/2) + 1 + 4096/2 blocks


def test_stream_layout_matches_philox_blocks():
    """Uniform j of chain i is built from block (counter, i) exactly as documented: counter words
    (n mod 2^32, n div 2^32, chain, 0), u = (k + 1/2) 2^-52 with k from the top 26 bits of two words.
    Catches a chain index put in the wrong word (then chains would share numbers) or a wrong key."""
    g = R.ChainRNG.from_seed(3, 4)
    g.counters[:] = np.uint64(2**32 - 1)  # the next block crosses into the high counter word
    u = g.uniform_like((4,)).numpy()
    k0, k1 = R.philox_key(3, 1)
    for i in range(4):
        for j, n in enumerate([2**32 - 1, 2**32]):
            w = R.philox4x32_10(np.array([[n & 0xFFFFFFFF, n >> 32, i, 0]]), [k0, k1])[0].astype(np.uint64)
            for h in range(2):
                k = (int(w[2 * h]) >> 6) << 26 | (int(w[2 * h + 1]) >> 6)
                assert u[i, 2 * j + h] == (k + 0.5) * 2.0**-52
    assert (g.get_state() == 2**32 + 1).all()


@pytest.mark.parametrize("path", ["default", "torch"])
def test_chain_i_independent_of_n_chains_and_resumable(path, monkeypatch):
    """Chain i's numbers depend only on (seed, purpose, i, counter): the same for 3 and for 9 chains,
    and a generator restored from ``get_state`` continues exactly. Catches keying by chain count
    (e.g. SeedSequence.spawn(n_chains) with a shared counter) and a state that misses part of the stream."""
    if path == "torch":
        monkeypatch.setattr(R, "_DISABLED_NUMBA", True)
    small, big = R.ChainRNG.from_seed(11, 3), R.ChainRNG.from_seed(11, 9)
    for _ in range(3):
        assert torch.equal(small.normal((4, 5)), big.normal((4, 5))[:3])
        assert torch.equal(small.uniform(), big.uniform()[:3])
    state = small.get_state()
    cont = small.normal((6,))
    other = R.ChainRNG.from_seed(11, 3)
    other.set_state(state)
    assert torch.equal(other.normal((6,)), cont)
    assert not torch.equal(R.ChainRNG.from_seed(11, 3, purpose=0).normal((6,)), R.ChainRNG.from_seed(11, 3).normal((6,)))
    with pytest.raises(LftmlError, match="random-stream state"):
        other.set_state(np.zeros((4,), dtype=np.uint64))
    with pytest.raises(LftmlError, match="random-stream state"):
        other.set_state(np.zeros((3, 5056), dtype=np.uint8))  # a legacy checkpoint


def _z(est, exact, err):
    return abs(est - exact) / err


def test_moments_of_uniforms_and_normals():
    """Moments of 2^20 numbers against their exact values, errors from the sample itself (independent
    draws: tau_int = 1/2 by construction; the lag-1 correlation is checked below at its own error).
    Catches a Box-Muller radius without the factor 2 (variance 1/2), cos used for both normals of a
    pair (pair correlation 1 in sign), a uniform on [0, 1/2), or a skewed quadrant reduction."""
    g = R.ChainRNG.from_seed(5, 16)
    z = g.normal((256, 256)).numpy().ravel()
    u = g.uniform_like((256, 256)).numpy().ravel()
    n = z.size
    assert 0.0 < u.min() and u.max() < 1.0
    # uniform: mean 1/2 (var 1/12), <u^2> = 1/3 (var 4/45)
    assert _z(u.mean(), 0.5, math.sqrt(1 / 12 / n)) < 4
    assert _z((u * u).mean(), 1 / 3, math.sqrt(4 / 45 / n)) < 4
    # normal: <z> = 0, <z^2> = 1 (var 2), <z^3> = 0 (var 15), <z^4> = 3 (var 96)
    for k, exact, var in [(1, 0.0, 1.0), (2, 1.0, 2.0), (3, 0.0, 15.0), (4, 3.0, 96.0)]:
        assert _z((z**k).mean(), exact, math.sqrt(var / n)) < 4, k
    # the two numbers of a Box-Muller pair, and neighbouring pairs, are uncorrelated: <z_a z_b> = 0, var 1
    pairs = z.reshape(-1, 2)
    assert _z((pairs[:, 0] * pairs[:, 1]).mean(), 0.0, math.sqrt(1 / len(pairs))) < 4
    assert _z((z[1:] * z[:-1]).mean(), 0.0, math.sqrt(1 / (n - 1))) < 4
    # tail: P(|z| > 3) = 0.0026998
    p = float(math.erfc(3 / math.sqrt(2)))
    assert _z((np.abs(z) > 3).mean(), p, math.sqrt(p * (1 - p) / n)) < 4
    # Box-Muller with the polynomial log/sin/cos agrees with libm to ~1 ulp (|z| <= ~8.6)
    u1 = torch.rand(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (1 - 1e-12) + 1e-13
    u2 = torch.rand(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = R._box_muller_torch(u1, u2)
    r = torch.sqrt(-2 * torch.log(u1))
    assert (a - r * torch.cos(2 * math.pi * u2)).abs().max() < 1e-14
    assert (b - r * torch.sin(2 * math.pi * u2)).abs().max() < 1e-14


def test_float32_and_signs_and_shapes():
    g = R.ChainRNG.from_seed(1, 3)
    x = g.normal((2, 2), dtype=torch.float32)
    assert x.shape == (3, 2, 2) and x.dtype == torch.float32
    s = g.signs()
    assert s.shape == (3,) and set(s.tolist()) <= {-1.0, 1.0}
    assert g.uniform_like(()).shape == (3,) and g.normal((0,)).shape == (3, 0)


def test_torch_generator_purposes_are_independent_and_stable():
    """One function derives every torch generator: purposes differ, the same (seed, purpose) repeats.
    Catches a derivation that ignores the purpose (model init and data order would then share a stream)."""
    a = torch.rand(4, generator=R.torch_generator(3, "init"))
    assert torch.equal(a, torch.rand(4, generator=R.torch_generator(3, "init")))
    assert not torch.equal(a, torch.rand(4, generator=R.torch_generator(3, "data")))
    assert not torch.equal(a, torch.rand(4, generator=R.torch_generator(4, "init")))
    assert 0 <= R.derive_seed(3, "init") < 2**63
    with pytest.raises(LftmlError, match="purpose"):
        R.derive_seed(3, "")


# --------------------------------------------------------------------------- files and the legacy stream
THEORY = Phi4.hopping(Lattice((6, 6)), 0.21, 0.022)


def _run(path, n_configs, resume=False):
    hmc = HMC.from_trajectory(THEORY, 1.0, 5)
    cfg = RunConfig(n_chains=3, n_configs=n_configs, n_therm=4, every=2, seed=5)
    return run(hmc, cfg, path, resume=resume, flush_every=3)


def _configs(path):
    with h5py.File(path, "r") as f:
        return f["configs"][: int(f.attrs["n_configs"])], json.loads(f.attrs["metadata"])


def test_new_files_record_the_stream(tmp_path):
    """Every new file names its stream; the checkpoint holds the counters (uint64 per chain)."""
    _run(tmp_path / "a.h5", 4)
    _, meta = _configs(tmp_path / "a.h5")
    assert meta["rng_stream"] == R.STREAM == "philox4x32-10/v1"
    ck = run_mod.read_checkpoint(tmp_path / "a.h5")
    assert np.asarray(ck["rng_state"]).dtype == np.uint64 and np.asarray(ck["rng_state"]).shape == (3,)


def test_legacy_file_resumes_with_its_own_stream_bit_identically(tmp_path, monkeypatch):
    """A file written by the previous version (per-chain torch.Generator stream, no ``rng_stream`` in
    its metadata) is resumed with that stream: the result equals an uninterrupted legacy run bit for bit
    and differs from a Philox run. Catches a resume that silently switches to the new stream (the
    legacy checkpoint's uint8 generator states would then be rejected, or the continuation would differ)."""
    with monkeypatch.context() as m:  # write the old format, exactly as the previous version did
        m.setattr(run_mod, "STREAM", R.LEGACY_STREAM)
        _run(tmp_path / "old.h5", 4)
        _run(tmp_path / "old_clean.h5", 9)
    old, meta = _configs(tmp_path / "old.h5")
    assert "rng_stream" not in meta
    assert np.asarray(run_mod.read_checkpoint(tmp_path / "old.h5")["rng_state"]).dtype == np.uint8
    _run(tmp_path / "old.h5", 9, resume=True)  # today's code, no patching
    resumed, meta = _configs(tmp_path / "old.h5")
    clean, _ = _configs(tmp_path / "old_clean.h5")
    assert np.array_equal(resumed, clean) and np.array_equal(resumed[:4], old)
    assert "rng_stream" not in meta  # still a legacy file, never a mixture
    _run(tmp_path / "new.h5", 9)
    assert not np.array_equal(_configs(tmp_path / "new.h5")[0], clean)


def test_unknown_stream_is_refused_in_one_line(tmp_path):
    """A file naming a stream this version does not know: one-line error, exit 2, file untouched."""
    out = tmp_path / "a.h5"
    args = ["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--chains", "2", "--therm", "2",
            "--seed", "1", "--no-progress", "--out", out]
    run_cli(*args, "--n-configs", "3", check=True)
    with h5py.File(out, "a") as f:
        meta = json.loads(f.attrs["metadata"])
        meta["rng_stream"] = "xoshiro/v9"
        f.attrs["metadata"] = json.dumps(meta)
    before = out.read_bytes()
    res = run_cli(*args, "--n-configs", "6", "--resume")
    assert res.exit_code == 2 and "unknown random stream 'xoshiro/v9'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before


@pytest.mark.parametrize("shape,integrator,jitter,traj,n_steps", [
    ((12, 10), "omelyan", 0.1, 2.0, 3), ((5, 4, 3), "leapfrog", 0.0, 2.0, 3), ((9,), "omelyan", 0.2, 2.2, 2)])
def test_inline_fused_step_equals_predrawn_path(shape, integrator, jitter, traj, n_steps, monkeypatch):
    """The fast path (one numba call per trajectory drawing jitter, momenta and the accept uniform inline
    from the counter) reproduces the pre-drawn path bit for bit: fields, actions, every record and the
    counters. Catches a different draw order (e.g. accept uniform before the momenta), a jitter block
    drawn when jitter is 0, a counter not advanced, or an accepted/rejected field swapped."""
    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba not installed")
    theory = Phi4.hopping(Lattice(shape), 0.26, 0.022)
    hmc = HMC.from_trajectory(theory, traj, n_steps, integrator, backend="fused", step_jitter=jitter)  # large steps: rejections
    phi = 0.5 * R.ChainRNG.from_seed(0, 4, purpose=0).normal(shape)
    a, b = hmc.init(phi), hmc.init(phi)
    ra, rb = R.ChainRNG.from_seed(1, 4), R.ChainRNG.from_seed(1, 4)
    n_acc = 0
    for _ in range(12):
        a, ia = hmc.step(a, ra)
        with monkeypatch.context() as m:
            m.setattr(fused, "draws_inline", lambda *args: False)
            b, ib = hmc.step(b, rb)
        assert torch.equal(a.phi, b.phi) and torch.equal(a.action, b.action)
        assert set(ia) == set(ib) and all(torch.equal(ia[k], ib[k]) for k in ia)
        n_acc += int(ia["accepted"].sum())
    assert np.array_equal(ra.get_state(), rb.get_state())
    assert 0 < n_acc < 48  # both branches of accept/reject were exercised
