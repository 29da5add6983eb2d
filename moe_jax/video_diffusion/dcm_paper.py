"""What DCM's paper and code report: the figures its claims are checked against."""
from __future__ import annotations

# Table 1: VBench (total, quality, semantic), 50-step teachers and 4-step students.
VBENCH = {
    "HunyuanVideo teacher, 50 steps": (83.87, 85.00, 79.34),
    "HunyuanVideo LCM, 4 steps": (80.33, 80.83, 78.32),
    "HunyuanVideo PCM, 4 steps": (80.93, 81.94, 76.90),
    "HunyuanVideo DCM, 4 steps": (83.83, 85.12, 78.67),
    "CogVideoX teacher, 50 steps": (80.59, 81.93, 75.23),
    "CogVideoX LCM, 4 steps": (78.88, 80.07, 74.12),
    "CogVideoX PCM, 4 steps": (79.09, 80.33, 74.14),
    "CogVideoX DCM, 4 steps": (79.99, 81.35, 74.56),
}
# Fig. 3: VBench total of separately trained students, read off the bar chart (about +-0.2).
FIG3 = {"VCM": 80.3, "SemE+VCM": 82.4, "VCM+DetE": 81.2, "SemE+DetE": 83.0}
# The HunyuanVideo recipe's phase boundary (sigmas_prev[38], shift 17) and the size of the latent
# it was set on: 29 frames of 720x1280 through HunyuanVideo's VAE (4x time, 8x space, 16 channels).
BOUNDARY_SIGMA, LATENT_DIMS = 0.98176, 8 * 90 * 160 * 16
