"""DCM (Lv et al., 2025, arXiv 2506.03123): dual-expert consistency distillation of a video
diffusion model.

Modules: `schedule` (rectified flow, shifted Euler grid, phase split), `dit` (tiny spatio-temporal
DiT with LoRA-ready attention), `experts` (semantic / detail expert parameters and routing),
`sampler` (Euler), `losses`, `discriminator`, `distill` (teacher training and phased consistency
distillation), `data` (moving digits, video-folder loader), `metrics`, `plots`.
"""
