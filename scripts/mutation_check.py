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
     "div = -(1.0 / (ps + s2)).sum(dim=1)", "div = -(1.0 / (ps + s2)).mean(dim=1)",
     "tests/test_diffusion_exact.py::test_analytic_divergence_equals_the_autograd_trace_of_the_analytic_part"),
    ("PCD without persistence", "lftml/rbm/training.py",
     "                    self.chains = x\n", "                    pass\n",
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
    ("fused kick+drift: a row's last site drifted with its old momentum", "lftml/samplers/_fused_kernels.py",
     "            out[y] = phi[y] + dcoef * pi[y]", "            out[y] = phi[y] + dcoef * edge[2 * r + 1]",
     "tests/test_engine_fused.py::test_fused_and_eager_chains_coincide_over_many_trajectories"),
    ("fused kick+drift: end point left in the scratch buffer", "lftml/samplers/_fused_kernels.py",
     "    if swapped:\n        x[:] = cur", "    if swapped:\n        pass",
     "tests/test_engine_fused.py::test_fused_and_eager_chains_coincide_over_many_trajectories"),
    ("padded MD: the halo column copies the wrong site", "lftml/samplers/_fused_kernels.py",
     "        a[r * S] = a[r * S + L]\n", "        a[r * S] = a[r * S + L - 1]\n",
     "tests/test_engine_fused.py::test_fused_and_eager_chains_coincide_over_many_trajectories"),
    ("padded MD: end-point momenta not copied back", "lftml/samplers/_fused_kernels.py",
     "    _unpad(pp, p, R, L)\n", "    pass\n",
     "tests/test_engine_fused.py::test_fused_and_eager_chains_coincide_over_many_trajectories"),
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
    # issue 11's physics fixes (each row reverts one fix)
    ("HMC stability bound at phi = 0 only (mean-field vacuum ignored)", "lftml/samplers/stability.py",
     "    v2 = vacuum_field2(theory) if vacuum else 0.0\n", "    v2 = 0.0\n",
     "tests/test_nearcrit_fa_hmc.py::test_stability_bound_is_the_max_over_zero_and_the_mean_field_vacuum"),
    ("float32 HMC: end-point action summed in float32 (eager)", "lftml/samplers/hmc.py",
     "        return self.theory.action(phi.to(torch.float64))\n", "        return self.theory.action(phi)\n",
     "tests/test_nearcrit_fa_hmc.py::test_float32_hmc_forms_dh_in_float64"),
    ("float32 HMC: kinetic energy summed in float32 (eager)", "lftml/samplers/kinetic.py",
     "        p = pi.to(torch.float64)\n        return 0.5 * (p * p).sum(dim=dims)",
     "        p = pi\n        return 0.5 * (p * p).sum(dim=dims)",
     "tests/test_nearcrit_fa_hmc.py::test_float32_hmc_forms_dh_in_float64"),
    ("EM sampler final step reuses the previous dt (no Tweedie step)", "lftml/diffusion/sampling.py",
     "            x = x + self.sde.std(t) ** 2 * self.score_fn(x, tb)\n",
     "            x = x + g2 * self.score_fn(x, tb) * (ts[k - 1] - ts[k]) + torch.sqrt(g2 * (ts[k - 1] - ts[k])) * _noise(x.shape, generator, self.dtype, self.device)\n",
     "tests/test_diffusion_exact.py::test_em_final_step_no_longer_shrinks_the_uv_modes"),
    ("CL boundary plateau: old rule min(z_tail, z_deep) (= the deep maximum)", "lftml/complex/diagnostics.py",
     "        zp = plateau_zscore(ests[i_tail], ests[i_deep])\n",
     "        zp = min(max((zs[i] for i in tail), default=0.0), max((zs[i] for i in deep), default=math.inf))\n",
     "tests/test_cl_diagnostics.py::test_correct_gaussian_run_has_no_boundary_plateau_at_two_statistics"),
    ("CL boundary plateau: same sign at both cut-offs not required", "lftml/complex/diagnostics.py",
     "        if va * vb <= 0:\n", "        if False:\n",
     "tests/test_cl_diagnostics.py::test_plateau_needs_both_cut_offs_with_one_sign"),
    ("adaptive Heun CL: noise drawn first, step shortened on the noisy predictor (noise reused)",
     "lftml/complex/langevin.py",
     "        eps, _ = self.step_sizes(state, kmax)\n"
     "        eta = rng.normal(z.shape[1:], dtype=torch.float64).to(z.device) * math.sqrt(2.0)\n",
     "        eta = rng.normal(z.shape[1:], dtype=torch.float64).to(z.device) * math.sqrt(2.0)\n"
     "        eps, _ = self.step_sizes(replace(state, drift=drift + eta / math.sqrt(float(self.settings.step_size))), kmax)\n",
     "tests/test_cl_sampler.py::test_adaptive_heun_step_depends_on_the_state_only_and_its_noise_is_drawn_for_it"),
    ("adaptive CL: <K_max> frozen only when the last chain measures", "lftml/complex/langevin.py",
     "            if bool(measuring.any()):\n                state = sampler.freeze(state)",
     "            if bool((state.t >= therm * (1 - 1e-12)).all()):\n                state = sampler.freeze(state)",
     "tests/test_cl_sampler.py::test_drift_reference_is_frozen_when_the_first_chain_starts_measuring"),
    ("analyze: Langevin free-field values labelled exact", "lftml/analysis.py",
     '"langevin": "dt0_limit"}', '"langevin": "exact"}',
     "tests/test_engine_analysis_values.py::test_free_field_labels_exact_for_hmc_and_dt0_limit_for_langevin"),
    ("analyze: effective-mass reference labelled with the last row label (<S>/V)", "lftml/cli/engine.py",
     "(f\"   ({label}: {exact['effective_mass']:.6g})\"", "(f\"   ({row_label}: {exact['effective_mass']:.6g})\"",
     "tests/test_engine_analysis_values.py::test_free_field_labels_exact_for_hmc_and_dt0_limit_for_langevin"),
    ("extrapolate: no warning when the fit does not describe the data", "lftml/cli/engine.py",
     "            if not ex.acceptable:\n", "            if False:\n",
     "tests/test_cl_extrapolate.py::test_cli_reports_fit_quality_and_warns_when_the_model_does_not_describe_the_data"),
    ("extrapolate: every fit acceptable", "lftml/samplers/langevin.py",
     "        return p is None or p >= FIT_P_MIN\n", "        return True\n",
     "tests/test_cl_extrapolate.py::test_p_values_of_correct_fits_are_uniform_and_wrong_models_are_refused_as_acceptable"),
    ("Gamma: C_F clamped at 0 (no naive-error fallback)", "lftml/stats.py",
     "    if not c_f > 0 or (c_f < resolution and rho[1] < 0):\n", "    if (c_f := max(c_f, 0.0)) < 0:\n",
     "tests/test_stats_unresolved.py::test_unresolved_anticorrelated_sum_never_gives_an_error_below_the_exact_one"),
    ("Gamma: anticorrelated window not completed by (odd, even) pairs", "lftml/stats.py",
     "    if tau_of_w[window - 1] < 0.5 and w_max >= 2:", "    if False:",
     "tests/test_stats_replica.py::test_anticorrelated_series_never_gets_error_zero"),
    ("Gamma: anticorrelated C_F not resolved from 0 accepted", "lftml/stats.py",
     " or (c_f < resolution and rho[1] < 0):\n", ":\n",
     "tests/test_stats_unresolved.py::test_unresolved_anticorrelated_sum_never_gives_an_error_below_the_exact_one"),
    # second, independent killers of rows that one test alone used to kill
    ("HMC Metropolis sign (unfused path), eager physics test", "lftml/samplers/hmc.py",
     "accept = torch.log(u) < -torch.nan_to_num(dH, nan=math.inf)",
     "accept = torch.log(u) < torch.nan_to_num(dH, nan=-math.inf)",
     "tests/test_engine_hmc_eager.py"),
    ("HMC eager: proposal kept on rejection", "lftml/samplers/hmc.py",
     "new = HMCState(torch.where(mask, phi1, phi0), torch.where(accept, s1, state.action), n_updates)",
     "new = HMCState(phi1, s1, n_updates)",
     "tests/test_engine_hmc_eager.py"),
    ("chi_2 missing V, closed-form test", "lftml/analysis.py",
     "lambda m2, m: V * (m2 - m * m)", "lambda m2, m: (m2 - m * m)",
     "tests/test_engine_summary_closed_form.py"),
    ("Binder factor 3 -> 2, closed-form test", "lftml/analysis.py",
     "1.0 - m4 / (3.0 * m2 * m2)", "1.0 - m4 / (2.0 * m2 * m2)",
     "tests/test_engine_summary_closed_form.py"),
    ("chi_abs from <M> instead of <|M|>", "lftml/analysis.py",
     "lambda m2, a: V * (m2 - a * a), M2, absM", "lambda m2, a: V * (m2 - a * a), M2, M",
     "tests/test_engine_summary_closed_form.py"),
    # issue 11's CLI findings
    ("warnings lose the observable's name", "lftml/analysis.py",
     "            out.append(f\"{k}: {v['warning']}\")\n", "            out.append(v['warning'])\n",
     "tests/test_engine_analysis_values.py::test_unreliable_warning_names_the_observable_in_json"),
    ("hmc --json: warnings only under analysis (not top level)", "lftml/cli/engine.py",
     "        summary[\"warnings\"] = list(summary[\"analysis\"][\"warnings\"])\n", "        pass\n",
     "tests/test_engine_analysis_values.py::test_unreliable_warning_names_the_observable_in_hmc_json"),
    ("rbm analytic: model file records the default schedule (n_updates 1000)", "lftml/rbm/workflows.py",
     "        return {\"method\": \"analytic\", \"n_updates\": 0}\n", "        return config.to_dict()\n",
     "tests/test_rbm_defaults.py::test_analytic_method_reports_no_update_count"),
    ("rbm analytic: typed update options silently ignored", "lftml/cli/rbm.py",
     "        if unused:\n", "        if False:\n",
     "tests/test_rbm_defaults.py::test_analytic_method_warns_that_typed_update_options_are_not_used"),
    ("EM sampler final step reuses the previous dt, exact-recursion test", "lftml/diffusion/sampling.py",
     "            x = x + self.sde.std(t) ** 2 * self.score_fn(x, tb)\n",
     "            x = x + g2 * self.score_fn(x, tb) * (ts[k - 1] - ts[k]) + torch.sqrt(g2 * (ts[k - 1] - ts[k])) * _noise(x.shape, generator, self.dtype, self.device)\n",
     "tests/test_diffusion_em_exact.py"),
    ("EM sampler: score at the end of the step (t_{k+1})", "lftml/diffusion/sampling.py",
     "            mean = x + g2 * self.score_fn(x, tb) * dt", "            mean = x + g2 * self.score_fn(x, ts[k + 1].expand(n)) * dt",
     "tests/test_diffusion_em_exact.py"),
    ("HMC eager: stored action not updated on acceptance", "lftml/samplers/hmc.py",
     "torch.where(accept, s1, state.action), n_updates)", "state.action, n_updates)",
     "tests/test_engine_hmc_eager.py"),
    ("HMC: acceptance probability exp(-dH) not clamped at 1", "lftml/samplers/hmc.py",
     "\"acceptance_probability\": torch.clamp(torch.exp(-dH_safe), max=1.0),", "\"acceptance_probability\": torch.exp(-dH_safe),",
     "tests/test_engine_hmc_eager.py::test_acceptance_probability_is_min_1_exp_minus_dH_on_both_info_paths"),
    ("HMC: acceptance probability exp(-dH) not clamped at 1 (numpy path, CPU float64)", "lftml/samplers/hmc.py",
     "np.minimum(np.where(np.isnan(d), 0.0, e), 1.0)", "np.where(np.isnan(d), 0.0, e)",
     "tests/test_engine_hmc_eager.py::test_eager_hmc_dH_satisfies_the_exact_equilibrium_identities"),
    ("SW bond test: upper bound y - y^2/2 (the lower one)", "lftml/samplers/_cluster_kernels.py",
     "hi = y * (1.0 - y * (0.5 - y / 6.0))", "hi = y * (1.0 - 0.5 * y)",
     "tests/test_nearcrit_cluster.py::test_bond_decision_without_expm1_equals_the_plain_comparison_at_the_boundary"),
    ("SW bond test: no safety margin on the bounds", "lftml/samplers/_cluster_kernels.py",
     "    if u < lo * (1.0 - 1e-12):", "    if u < lo:",
     "tests/test_nearcrit_cluster.py::test_bond_decision_without_expm1_equals_the_plain_comparison_at_the_boundary"),
    ("SW flips (numba): each site reads its own uniform, not its cluster's", "lftml/samplers/_cluster_kernels.py",
     "            if site_u[r] < 0.5:", "            if site_u[c * V + x] < 0.5:",
     "tests/test_nearcrit_cluster.py::test_union_find_labels_are_the_connected_components_of_the_scipy_path"),
    ("SW flips (numba): mean cluster size over the clusters, not over the sites", "lftml/samplers/_cluster_kernels.py",
     "            total += counts[r]", "            total += counts[r] if r == c * V + x else 0",
     "tests/test_nearcrit_cluster.py::test_union_find_labels_are_the_connected_components_of_the_scipy_path"),
    ("undo journal: pages below the old size written in place at once (no journal)", "lftml/undo.py",
     "        split = min(max(pos, self._old), end)", "        split = pos",
     "tests/test_undo.py::test_a_kill_before_any_file_operation_of_a_flush_is_undone_to_the_byte"),
    ("undo journal: pages written before their old content is journaled", "lftml/undo.py",
     "        if records:\n            _pwrite(self._jfd, records,",
     "        for page, content in sorted(self._dirty.items()):\n            _pwrite(self._fd, content, page * PAGE)\n"
     "        if records:\n            _pwrite(self._jfd, records,",
     "tests/test_undo.py::test_a_kill_before_any_file_operation_of_a_flush_is_undone_to_the_byte"),
    ("recovery: a reader undoes the flush of a live writer in another process", "lftml/ensemble.py",
     "            return False  # a live writer", "            return rollback(path)  # a live writer",
     "tests/test_undo.py::test_a_reader_undoes_a_dead_writers_flush_but_never_a_live_one"),
    ("recovery: a reader undoes the flush in progress in its own process", "lftml/ensemble.py",
     "    if not journal_path(path).exists() or in_progress_here(path):", "    if not journal_path(path).exists():",
     "tests/test_scan_faults.py::test_live_reader_while_the_scan_writes_its_second_point"),
    ("undo journal: no truncation to the logical end after whole pages are written", "lftml/undo.py",
     "        if truncated or self._size < self._old:", "        if truncated:",
     "tests/test_undo.py::test_the_file_object_reads_and_ends_as_a_plain_file_under_random_writes_and_truncations"),
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
    lines = proc.stdout.strip().splitlines() or [""]
    # the first "E   ..." line says why the test failed (an assertion, or an exception the mutation caused)
    why = next((ln[1:].strip() for ln in lines if ln.startswith("E ")), "")
    return proc.returncode == 1, lines[-1] + (f" [{why[:160]}]" if why else "")  # 1 = a test failed; 2-5: not a kill


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
