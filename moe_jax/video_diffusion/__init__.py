"""Video diffusion: a rectified-flow video DiT and DCM (Lv et al., 2025, arXiv 2506.03123), its
dual-expert consistency distillation.

Generic: `schedule` (rectified flow, shifted Euler grid, phase split), `dit` (tiny spatio-temporal
DiT with LoRA-ready attention), `sampler` (Euler), `data` (moving digits, video-folder loader),
`metrics`. DCM: `dcm` (the experiment: recipe, scoring, claims), `dcm_config`, `dcm_variants`,
`dcm_experts` (semantic / detail expert parameters and routing), `dcm_losses`,
`dcm_discriminator`, `dcm_distill` (teacher training and phased consistency distillation),
`dcm_timeline` (the teacher's synthesis timeline), `dcm_paper` (the paper's figures),
`dcm_report` (tables and plots).
"""
