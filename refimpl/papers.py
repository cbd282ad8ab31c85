"""The paper index: each of the 63 papers of the project, where the book treats it, the function that implements
its core math and the test that pins it.

Paper numbers, chapters and sections follow ``COVERAGE.md`` (the project's map) and ``papers/abstracts.md``.
``function`` is the dotted path of the package function (or method) that implements the paper's core math and
``test`` the node id ``tests/<file>.py::<test function>`` of a test that pins it; both are None for a paper
whose code is not written yet (its chapter is the planned one) or that has no reusable math (a pointer or an
out-of-scope note, said in ``note``). ``key`` is the paper's BibTeX key where registered samplers implement it,
so that the coverage page joins the index with the registry. ``tests/test_papers.py`` checks that every named
function imports and every named test exists, so the page (``notebooks/99_coverage.md``) cannot drift.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from refimpl._validation import check_instance
from refimpl.registry import samplers

__all__ = ["CHAPTERS", "PAPERS", "Paper", "book_chapter", "coverage_table", "resolve"]

#: Chapter of COVERAGE.md's plan -> (title, notebook stems of its sections; None while the chapter is planned).
#: The book numbers its chapters by file instead (``book_chapter``): the plan's chapter 3 is the book's 5 and 6.
CHAPTERS: dict[int, tuple[str, tuple[str, ...] | None]] = {
    1: ("The analytic lab", ("02_analytic_lab",)),
    2: ("Changing the forward process", ("03_forward_variants",)),
    3: (
        "Exponential integrators and multistep ODE solvers",
        ("05_exponential_integrators", "06_multistep_predictor_corrector"),
    ),
    4: ("Predictor-corrector, time steps, solver search, cheaper evaluations", ("07_search_and_cheaper_evaluations",)),
    5: ("Exact inversion and editing", ("08_inversion", "09_editing")),
    6: ("Guidance, MCMC and sequential Monte Carlo", ("10_guidance",)),
    7: ("Differentiating through samplers", ("11_differentiating",)),
    8: ("Distillation and one-step generators", ("12_distillation",)),
    9: ("Score distillation as particle flows", ("13_score_distillation",)),
    10: ("Transport paths", ("14_transport_paths",)),
    11: ("Discrete tokens", ("15_discrete_tokens",)),
    12: ("Choosing samples", ("16_choosing_samples",)),
    13: ("Application gallery", ("17_gallery",)),
}


@dataclass(frozen=True)
class Paper:
    """One paper: its number in ``abstracts.md``, a short name, its chapter and section (notebook stem), the
    dotted path of the function implementing its core math, the test pinning it, its BibTeX key if registered
    samplers implement it, and a note (why there is no function, or what the entry covers)."""

    number: int
    short: str
    chapter: int
    section: str | None = None
    function: str | None = None
    test: str | None = None
    key: str | None = None
    note: str = ""


_T = "tests/test_"
PAPERS: tuple[Paper, ...] = (
    Paper(1, "REFace", 7, "11_differentiating", "refimpl.differentiable.few_step.partial_chain",
          f"{_T}differentiable_few_step.py::test_gradient_through_k_step_ddim_on_the_digits_unet_equals_finite_differences",
          note="a loss through a few DDIM steps"),
    Paper(2, "Tex4D", 13, "17_gallery", "refimpl.gallery.average_latents",
          f"{_T}gallery.py::test_averaged_latents_have_variance_abar_var_plus_noise_over_k"),
    Paper(3, "InstructVideo", 7, "11_differentiating", "refimpl.differentiable.few_step.finetune_reward",
          f"{_T}differentiable_few_step.py::test_reward_loop_through_the_partial_chain_raises_the_held_out_reward",
          note="the reward loop through a partial sampling chain (reward fine-tuning as editing)"),
    Paper(4, "DPM-Solver++", 3, "05_exponential_integrators",
          "refimpl.samplers.dpm_solver_pp.sample_dpm_solver_pp_multistep",
          f"{_T}dpm_solver_pp.py::test_3m_keeps_its_order_only_with_a_second_order_warm_up", key="lu2022dpmsolverpp"),
    Paper(5, "Time-Shift sampler", 4, "07_search_and_cheaper_evaluations",
          "refimpl.search.time_shift.sample_time_shift",
          f"{_T}search_timeshift.py::test_time_shift_lowers_the_variance_error_under_exposure_bias"),
    Paper(6, "PNDM", 3, "06_multistep_predictor_corrector", "refimpl.samplers.pndm.sample_pndm",
          f"{_T}pndm.py::test_transfer_part_is_the_ddim_step", key="liu2022pndm"),
    Paper(7, "MMD-DDM", 7, "11_differentiating", "refimpl.differentiable.mmd.mmd2_unbiased",
          f"{_T}differentiable.py::test_unbiased_mmd_mean_is_the_population_value"),
    Paper(8, "StyleSSP", 5, "09_editing", "refimpl.editing.reduce_low_frequencies",
          f"{_T}editing.py::test_low_frequency_filter_is_a_projection_that_spares_the_high_band", note="sidebar"),
    Paper(9, "Edit-friendly DDPM noise space", 5, "08_inversion", "refimpl.samplers.edit_friendly.extract_noise_maps",
          f"{_T}inversion_edit_friendly.py::test_regeneration_reproduces_every_step_of_the_auxiliary_path",
          key="hubermanspiegelglas2024edit"),
    Paper(10, "DEIS", 3, "05_exponential_integrators", "refimpl.samplers.deis.deis_ab_coefficients",
          f"{_T}deis.py::test_tab_weights_equal_adaptive_quadrature", key="zhang2023deis"),
    Paper(11, "BDIA", 5, "08_inversion", "refimpl.samplers.bdia.sample_bdia",
          f"{_T}inversion.py::test_bdia_rounding_grows_like_gamma_to_the_minus_n", key="zhang2023bdia"),
    Paper(12, "PTQ4DM", 4, "07_search_and_cheaper_evaluations", "toy_models.quantize.quantize_model",
          f"{_T}quantize.py::test_calibration_at_a_single_step_is_worse_against_the_exact_toy_than_ndtc"),
    Paper(13, "DomainStudio", 13, "17_gallery", "refimpl.gallery.pairwise_similarity_loss",
          f"{_T}gallery.py::test_the_similarity_loss_is_zero_for_matching_similarities_and_scale_invariant"),
    Paper(14, "RDDM", 2, "03_forward_variants", "refimpl.forward.rddm.sample_rddm",
          f"{_T}forward.py::test_rddm_with_zero_input_is_ddim_to_roundoff"),
    Paper(15, "HD-Painter", 6, "10_guidance", "refimpl.guidance.hdpainter.structured_ddim_step",
          f"{_T}guidance_active.py::test_structured_noise_has_the_eta_ddim_variance_budget", note="sidebar"),
    Paper(16, "EMDM", 1, "02_analytic_lab", "toy_models.GaussianMixture.reverse_kernel",
          f"{_T}gmm.py::test_reverse_kernel_is_normalised_and_pushes_p_t_to_p_s"),
    Paper(17, "DDPM/DDIM/CFG recipe", 1, "02_analytic_lab", "refimpl.samplers.ddim.ddim_sigma",
          f"{_T}ddpm_ddim.py::test_ddim_eta_one_has_the_ddpm_posterior_variance", key="song2021ddim"),
    Paper(18, "ProDiff", 8, "12_distillation", "refimpl.distillation.progressive.progressive_distillation",
          f"{_T}distillation.py::test_students_8_4_2_1_reproduce_the_teacher_map"),
    Paper(19, "USF / S3", 4, "07_search_and_cheaper_evaluations", "refimpl.search.evolution.usf_search",
          f"{_T}search.py::test_every_decoded_solver_spends_exactly_its_budget"),
    Paper(20, "DiffuseVAE", 2, "03_forward_variants", "refimpl.forward.diffusevae.sample_diffusevae",
          f"{_T}forward.py::test_diffusevae_with_zero_reconstruction_is_ddpm_bit_for_bit"),
    Paper(21, "DC-Solver", 4, "07_search_and_cheaper_evaluations", "refimpl.search.dc_solver.sample_dc_solver",
          f"{_T}search_dc.py::test_rho_one_is_unipc_bit_for_bit"),
    Paper(22, "Denoising MCMC", 6, "10_guidance", "refimpl.guidance.dmcmc.dlg_sweep",
          f"{_T}guidance_dmcmc.py::test_gibbs_sigma_step_keeps_the_joint_and_argmax_does_not"),
    Paper(23, "DPM-Solver", 3, "05_exponential_integrators", "refimpl.samplers.dpm_solver.sample_dpm_solver",
          f"{_T}dpm_solver.py::test_dpm_solver_3_stage_and_step_are_exact_when_eps_is_linear_in_lambda",
          key="lu2022dpmsolver"),
    Paper(24, "Minority guidance", 6, "10_guidance", "refimpl.guidance.minority.minority_score",
          f"{_T}guidance_dmcmc.py::test_minority_fraction_rises_with_the_guidance_weight"),
    Paper(25, "DMD2", 8, "12_distillation", "refimpl.distillation.dmd.train_dmd2",
          f"{_T}distillation.py::test_dmd2_gradient_vanishes_at_the_data_law"),
    Paper(26, "CoMoSpeech", 8, "12_distillation", "refimpl.distillation.consistency.cd_update",
          f"{_T}distillation.py::test_cd_fixed_point_is_the_exact_flow_map"),
    Paper(27, "InfEdit / DDCM", 5, "09_editing", "refimpl.editing.infedit",
          f"{_T}editing.py::test_infedit_with_an_unchanged_condition_returns_the_input"),
    Paper(28, "DPM-Solver-v3", 3, "06_multistep_predictor_corrector",
          "refimpl.samplers.dpm_solver_v3.sample_dpm_solver_v3",
          f"{_T}dpm_solver_v3.py::test_statistics_off_is_dpm_solver_pp_and_l0_s_minus1_is_dpm_solver",
          key="zheng2023dpmsolverv3"),
    Paper(29, "Masked diffusion, first-hitting sampler", 11, "15_discrete_tokens",
          "refimpl.discrete.masked.sample_first_hitting",
          f"{_T}masked.py::test_the_first_hitting_sampler_has_exactly_the_joint_law"),
    Paper(30, "CFG++", 6, "10_guidance", "refimpl.samplers.cfgpp.sample_cfgpp",
          f"{_T}guidance_cfg.py::test_cfgpp_at_lambda_zero_is_unconditional_ddim"),
    Paper(31, "Multi-draft speculative decoding", 11, "15_discrete_tokens",
          "refimpl.discrete.speculative.optimal_acceptance_lp",
          f"{_T}speculative.py::test_the_linear_program_equals_the_subset_formula"),
    Paper(32, "Invertible diffusion for compressed sensing", 7, "11_differentiating",
          "refimpl.differentiable.reversible.reversible_gradients",
          f"{_T}differentiable.py::test_reversible_backprop_equals_autograd_with_depth_independent_memory"),
    Paper(33, "MIG", 12, "16_choosing_samples", "refimpl.selection.greedy.mig_select",
          f"{_T}greedy.py::test_mig_exact_greedy_reaches_one_minus_one_over_e_of_the_optimum"),
    Paper(34, "SCott", 8, "12_distillation", "refimpl.distillation.consistency.sde_teacher_covariance",
          f"{_T}distillation.py::test_sde_teacher_covariance_is_the_marginal_minus_the_posterior_spread"),
    Paper(35, "SDIM", 12, "16_choosing_samples", "refimpl.selection.hashing.hashing_attention",
          f"{_T}hashing.py::test_simhash_signatures_collide_with_probability_one_minus_theta_over_pi_to_the_tau"),
    Paper(36, "DPM-OT", 10, "14_transport_paths", "refimpl.transport.semidiscrete.fit_semidiscrete_ot",
          f"{_T}transport_ot.py::test_converged_cell_masses_equal_the_target_weights"),
    Paper(37, "Differential diagnosis with LLMs", 13, "17_gallery", note="out of scope: a clinical reader study"),
    Paper(38, "CausalDiffAE", 5, "09_editing", "refimpl.counterfactual.diffusion_counterfactual",
          f"{_T}editing.py::test_diffusion_counterfactual_converges_to_the_ode_counterfactual", note="sidebar"),
    Paper(39, "Classifier guidance, calibrated", 6, "10_guidance", "refimpl.guidance.classifier.fit_temperature_table",
          f"{_T}guidance_classifier.py::test_calibration_lowers_ece_and_the_guidance_error"),
    Paper(40, "Equitable allocation", 12, "16_choosing_samples", "refimpl.selection.allocation.greedy_allocation",
          f"{_T}allocation.py::test_greedy_meets_the_discrete_kkt_conditions"),
    Paper(41, "MLLM-DataEngine", 13, "17_gallery", note="out of scope: a data-generation pipeline"),
    Paper(42, "Dreamer XL", 9, "13_score_distillation", "refimpl.distillation.score_distillation.tsm_gradient",
          f"{_T}score_distillation.py::test_tsm_with_gamma_one_is_ism_and_differs_otherwise"),
    Paper(43, "Feynman-Kac correctors", 6, "10_guidance", "refimpl.guidance.smc.sample_fk",
          f"{_T}guidance_smc.py::test_fk_reaches_the_cfg_target_where_naive_mixing_does_not"),
    Paper(44, "AdjointDPM", 7, "11_differentiating", "refimpl.differentiable.adjoint.adjoint_gradients",
          f"{_T}differentiable.py::test_adjoint_converges_to_the_exact_gradient_at_fourth_order"),
    Paper(45, "PixelMan", 5, "09_editing", note="a note: no sampling math of its own"),
    Paper(46, "DDSP", 13, "17_gallery", note="out of scope: differentiable synthesis, no sampling math"),
    Paper(47, "DPPs and volume sampling for least squares", 12, "16_choosing_samples",
          "refimpl.selection.dpp.weighted_least_squares",
          f"{_T}dpp.py::test_the_dpp_error_is_m_plus_one_times_the_best"),
    Paper(48, "DATED", 12, "16_choosing_samples", "refimpl.selection.designs.centered_discrepancy",
          f"{_T}designs.py::test_space_filling_designs_have_lower_discrepancy_than_iid_points", note="sidebar"),
    Paper(49, "Active diffusion subsampling", 6, "10_guidance", "refimpl.guidance.active.max_entropy_index",
          f"{_T}guidance_active.py::test_max_entropy_is_max_posterior_variance_for_a_gaussian_prior"),
    Paper(50, "T-Stitch", 4, "07_search_and_cheaper_evaluations", "refimpl.search.stitch.StitchedModel",
          f"{_T}search_stitch.py::test_fractions_zero_and_one_are_the_models_alone"),
    Paper(51, "DiffusionCT", 1, "02_analytic_lab", note="a pointer: latent DDPM at a frozen autoencoder"),
    Paper(52, "A-SDM", 4, "07_search_and_cheaper_evaluations", "toy_models.caching.CachedUNet",
          f"{_T}quantize.py::test_caching_interval_one_is_the_uncached_unet_bit_for_bit",
          note="sidebar: feature inheritance as feature caching; model switching is T-Stitch"),
    Paper(53, "Greedy max-entropy sampler", 12, "16_choosing_samples", "refimpl.selection.greedy.gme_greedy",
          f"{_T}greedy.py::test_the_approximate_pick_is_in_the_top_n_with_the_readme_probability_by_enumeration"),
    Paper(54, "EDICT", 5, "08_inversion", "refimpl.samplers.edict.sample_edict",
          f"{_T}inversion.py::test_edict_and_bdia_round_trips_are_below_1e_12_relative_at_50_steps",
          key="wallace2023edict"),
    Paper(55, "ProlificDreamer", 9, "13_score_distillation", "refimpl.distillation.score_distillation.vsd_gradient",
          f"{_T}score_distillation.py::test_sds_collapses_each_mode_and_vsd_keeps_its_spread"),
    Paper(56, "VQ discrete diffusion", 11, "15_discrete_tokens", "refimpl.discrete.vq.posterior",
          f"{_T}vq.py::test_the_posterior_is_bayes_rule_by_enumeration_and_its_rows_sum_to_one"),
    Paper(57, "Made Slim", 1, "02_analytic_lab",
          note="a frequency view of the exact posterior mean, computed in the chapter"),
    Paper(58, "TrojDiff", 2, "03_forward_variants", "refimpl.forward.trojdiff.sample_trojan",
          f"{_T}forward.py::test_poisoned_model_keeps_the_clean_law_and_the_trigger_reaches_the_target"),
    Paper(59, "CDRL", 2, "03_forward_variants", "refimpl.forward.cdrl.recovery_gaussian",
          f"{_T}forward.py::test_langevin_refinement_has_the_closed_form_moments"),
    Paper(60, "GMem", 13, "17_gallery", "refimpl.gallery.mixture_score_from_components",
          f"{_T}gallery.py::test_the_mixture_score_is_the_responsibility_weighted_memory_conditioned_score"),
    Paper(61, "Distilled Decoding", 10, "14_transport_paths",
          "refimpl.transport.distilled_decoding.codebook_velocity",
          f"{_T}transport_dd.py::test_push_forward_of_the_noise_is_the_categorical"),
    Paper(62, "AutoDiffusion", 4, "07_search_and_cheaper_evaluations", "refimpl.search.evolution.autodiffusion_search",
          f"{_T}search.py::test_autodiffusion_search_keeps_valid_subsets_and_beats_even_spacing"),
    Paper(63, "Deita", 12, "16_choosing_samples", "refimpl.selection.greedy.deita_select",
          f"{_T}greedy.py::test_deita_accepts_in_score_order_and_every_accepted_pair_is_within_tau"),
)  # fmt: skip


class UnresolvedPathError(ValueError, ImportError):
    """A dotted path that names nothing: a bad value of ``dotted`` (ValueError), and still the ImportError that
    callers of ``resolve`` caught before."""


def resolve(dotted: str) -> object:
    """The object at a dotted path: the longest importable module prefix, then attributes (``UnresolvedPathError``,
    a ValueError, if none)."""
    check_instance(dotted, str, "dotted")
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except (ImportError, ValueError):  # ValueError: an empty module name
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                raise UnresolvedPathError(f"dotted path {dotted!r}: {'.'.join(parts[:cut])} has no attribute {name!r}")
            obj = getattr(obj, name)
        return obj
    raise UnresolvedPathError(f"nothing importable in the dotted path {dotted!r}")


def book_chapter(stem: str) -> int:
    """The number the book gives the chapter in ``notebooks/<stem>.md``: its file's two-digit prefix (the files are
    numbered in the book's order). ``CHAPTERS`` keeps the numbering of ``COVERAGE.md``'s plan, which groups them."""
    check_instance(stem, str, "stem")
    prefix = stem.split("_", 1)[0]
    if not (len(prefix) == 2 and prefix.isdigit()):
        raise ValueError(f"stem {stem!r}: expected a chapter file name such as '05_exponential_integrators'")
    return int(prefix)


def coverage_table() -> str:
    """The coverage page's table (Markdown): every paper, its chapter and section, the function implementing its
    core math, the test pinning it, and the registered samplers implementing it (from the registry)."""
    registered: dict[str, list[str]] = {}
    for spec in samplers(kind=None):
        registered.setdefault(spec.paper, []).append(spec.name)
    rows = ["| # | paper | chapter | function | test | registered samplers |", "|---|---|---|---|---|---|"]
    for p in sorted(PAPERS, key=lambda p: p.number):
        title = CHAPTERS[p.chapter][0]
        where = f"{book_chapter(p.section)}. {title} (`{p.section}`)" if p.section else f"{title} (planned)"
        function = f"`{p.function}`" if p.function else (p.note or "to come")
        test = f"`{p.test}`" if p.test else ""
        names = ", ".join(f"`{n}`" for n in registered.get(p.key, [])) if p.key else ""
        rows.append(f"| {p.number} | {p.short} | {where} | {function} | {test} | {names} |")
    return "\n".join(rows)
