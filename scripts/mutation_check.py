"""Re-verify docs/mutation_testing.md: each mutation must make its named default-suite test fail.

For every row: copy src/ to a temp dir, replace one exact snippet (must occur exactly once), run the
named pytest node with PYTHONPATH pointing at the mutated copy, and expect a non-zero exit status.
Also checks that the snippet exists in the real code (so the table cannot silently go stale).
Not part of the default suite. Usage: python scripts/mutation_check.py [substring-filter]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (name, file under src/, original snippet, mutated snippet, pytest node id)
MUTATIONS: list[tuple[str, str, str, str, str]] = [
    ("Gamma window with per-chain N", "lftml/stats.py",
     "tau_exp / np.sqrt(windows * n_total)", "tau_exp / np.sqrt(windows * n)",
     "tests/test_stats_replica.py::test_window_depends_on_S_and_total_N_for_several_chains"),
    ("Gamma S ignored for several chains", "lftml/stats.py",
     "            S / np.log((2.0 * tau_of_w + 1.0)", "            (S if n_chains == 1 else 2.0) / np.log((2.0 * tau_of_w + 1.0)",
     "tests/test_stats_replica.py::test_window_depends_on_S_and_total_N_for_several_chains"),
    ("analytic divergence sum -> mean", "lftml/diffusion/model.py",
     "return -(1.0 / (ps + s2)).sum(dim=1)", "return -(1.0 / (ps + s2)).mean(dim=1)",
     "tests/test_diffusion_exact.py::test_analytic_divergence_equals_the_autograd_trace_of_the_analytic_part"),
    ("PCD without persistence", "lftml/rbm/training.py",
     "                    chains = x\n", "                    pass\n",
     "tests/test_rbm_defaults.py::test_pcd_persistence_matters_on_a_slowly_mixing_target"),
    ("DSM loss unweighted under default (likelihood) weighting", "lftml/diffusion/losses.py",
     "    return (w * per).mean()", "    return per.mean()",
     "tests/test_diffusion_learning.py::test_dsm_loss_with_default_weighting_is_the_path_space_kl_difference"),
    # physics core (chosen by the reviewer)
    ("phi4 force: mass/quartic term sign", "lftml/theories/phi4.py",
     "- phi * (2.0 * c2 + 4.0 * c4 * phi * phi)", "+ phi * (2.0 * c2 + 4.0 * c4 * phi * phi)",
     "tests/test_engine_phi4.py"),
    ("lattice Laplacian diagonal factor 2 -> 1", "lftml/lattice.py",
     "out = -2.0 * self.ndim * phi", "out = -1.0 * self.ndim * phi",
     "tests/test_engine_lattice.py"),
    ("HMC Metropolis sign (unfused path)", "lftml/samplers/hmc.py",
     "accept = torch.log(u) < -torch.nan_to_num(dH, nan=math.inf)",
     "accept = torch.log(u) < torch.nan_to_num(dH, nan=-math.inf)",
     "tests/test_engine_fused.py::test_fused_and_eager_chains_coincide_over_many_trajectories"),
    ("Gamma window off by one (sum to W-1)", "lftml/stats.py",
     "    gamma = gamma + c_f / n_total\n    c_f = gamma[0] + 2.0 * gamma[1 : window + 1].sum()",
     "    gamma = gamma + c_f / n_total\n    c_f = gamma[0] + 2.0 * gamma[1 : window].sum()",
     "tests/test_stats.py"),
    ("free-field spectrum p_hat^2 factor", "lftml/theories/free.py",
     "return self.lattice.p_hat2() + self.m2", "return 0.5 * self.lattice.p_hat2() + self.m2",
     "tests/test_engine_theories.py"),
    ("chi_2 missing V", "lftml/analysis.py",
     "lambda m2, m: V * (m2 - m * m)", "lambda m2, m: (m2 - m * m)",
     "tests/test_engine_hmc.py::test_hmc_free_field_susceptibility_is_one_over_m2_and_binder_is_zero"),
    ("Binder factor 3 -> 2", "lftml/analysis.py",
     "1.0 - m4 / (3.0 * m2 * m2)", "1.0 - m4 / (2.0 * m2 * m2)",
     "tests/test_engine_hmc.py::test_hmc_free_field_susceptibility_is_one_over_m2_and_binder_is_zero"),
    ("FourierMass kinetic: inverse mass not inverted", "lftml/samplers/kinetic.py",
     "self._cache[key] = (h.sqrt(), 1.0 / h)", "self._cache[key] = (h.sqrt(), h)",
     "tests/test_nearcrit_fa_hmc.py"),
    ("cluster bond probability 1-exp(-2J) -> 1-exp(-J)", "lftml/samplers/cluster.py",
     "-np.expm1(-2.0 * c_hop * abs_x * abs_y)", "-np.expm1(-1.0 * c_hop * abs_x * abs_y)",
     "tests/test_nearcrit_cluster.py"),
    ("rng torch path: counter not advanced (stream reuse)", "lftml/samplers/rng.py",
     "        self.counters += np.uint64((m + 1) // 2)\n", "        pass\n",
     "tests/test_engine_rng.py"),
]


def run_one(name: str, rel: str, old: str, new: str, node: str) -> tuple[bool, str]:
    """Apply one mutation in a temp copy of src/ and run ``node``; True if the test failed (killed)."""
    text = (ROOT / "src" / rel).read_text()
    if text.count(old) != 1:
        return False, f"snippet occurs {text.count(old)} times in src/{rel} (table stale)"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        (src / rel).write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", node, "-x", "-q", "-p", "no:cacheprovider"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode == 1, last  # 1 = a test failed; 2-5 = collection/usage error, not a kill


def main() -> int:
    flt = sys.argv[1] if len(sys.argv) > 1 else ""
    survivors = 0
    for row in MUTATIONS:
        if flt not in row[0]:
            continue
        killed, last = run_one(*row)
        survivors += not killed
        print(f"{'KILLED  ' if killed else 'SURVIVED'} {row[0]} | {row[4]} | {last}", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
