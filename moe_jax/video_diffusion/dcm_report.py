"""DCM's report: the result tables (markdown) and the figures: sample grids (PNG), animated
grids (GIF), per-timestep loss / gradient-norm plots, the teacher's synthesis timeline, training
curves."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

from moe_jax.utils.reporting import markdown_table, save_figure
from moe_jax.video_diffusion import dcm_paper
from moe_jax.video_diffusion.dcm_config import DCMConfig
from moe_jax.video_diffusion.dcm_variants import EXPERT_SWAPS, LABELS

METRICS = ("fd", "fd_teacher", "temporal_err", "detail_err", "coherence")
LOWER_IS_BETTER = METRICS[:-1]


def _tile(clip_rows: Sequence[np.ndarray], frame: int) -> np.ndarray:
  """Rows of clips [N, T, H, W, 1] -> one uint8 image of frame `frame` with 1-pixel gutters."""
  rows = []
  for clips in clip_rows:
    tiles = [np.pad(c[frame, ..., 0], 1, constant_values=-1) for c in clips]
    rows.append(np.concatenate(tiles, axis=1))
  img = np.concatenate(rows, axis=0)
  return ((np.clip(img, -1, 1) + 1) * 127.5).astype(np.uint8)


def sample_grid(workdir: str, name: str, rows: dict, clips: int = 4) -> str:
  """PNG: one row per method, `clips` clips each shown as its frames side by side."""
  frames = next(iter(rows.values())).shape[1]
  figsize = (1.6 * clips * frames / 4, 1.0 * len(rows) + 0.5)
  fig, axes = plt.subplots(len(rows), clips, figsize=figsize, squeeze=False)
  for r, (label, videos) in enumerate(rows.items()):
    for c in range(clips):
      strip = np.concatenate([np.pad(f[..., 0], 1, constant_values=-1) for f in videos[c]], axis=1)
      axes[r, c].imshow(strip, cmap="gray", vmin=-1, vmax=1)
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
  fig.suptitle("samples from the same noise (frames left to right)", fontsize=9)
  return save_figure(fig, workdir, name)


def sample_gif(workdir: str, name: str, rows: dict, clips: int = 4, scale: int = 4) -> str:
  """Animated GIF of the same layout as `sample_grid` (one row per method, `clips` clips)."""
  frames = next(iter(rows.values())).shape[1]
  images = []
  for t in range(frames):
    img = _tile([v[:clips] for v in rows.values()], t)
    images.append(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                              Image.NEAREST))
  path = os.path.join(workdir, name if name.endswith(".gif") else name + ".gif")
  images[0].save(path, save_all=True, append_images=images[1:], duration=200, loop=0)
  return path


def per_timestep_plot(workdir: str, name: str, curves: dict, boundary_sigma: float) -> str:
  """Loss and gradient norm against the noise level, one line per curve label (log scale; exact
  zeros, e.g. the teacher at a phase's first node, are left out)."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  positive = lambda y: np.where(np.asarray(y) > 0, y, np.nan)
  for label, (sigmas, loss, grad) in curves.items():
    axes[0].plot(sigmas, positive(loss), marker=".", label=label)
    axes[1].plot(sigmas, positive(grad), marker=".", label=label)
  for ax, title in zip(axes, ("consistency loss", "gradient norm")):
    ax.axvline(boundary_sigma, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("noise level s (dashed: semantic/detail boundary)")
    ax.set_title(title, fontsize=9)
  axes[0].legend(fontsize=7)
  return save_figure(fig, workdir, name)


def timeline_plot(workdir: str, name: str, timeline: dict, boundary_sigma: float) -> str:
  """Layout / motion correlation of the teacher's clean-clip estimate with its final sample."""
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for key in ("layout", "motion"):
    ax.plot(timeline["sigma"], timeline[key], marker=".", label=key)
  ax.axvline(boundary_sigma, color="gray", ls="--", lw=1)
  ax.invert_xaxis()
  ax.set_xlabel("noise level s along the teacher's path (dashed: boundary)")
  ax.set_ylabel("correlation with the final clip")
  ax.legend(fontsize=7)
  return save_figure(fig, workdir, name)


def training_curves(workdir: str, name: str, curves: dict) -> str:
  """Per-step training losses (moving average over 20 steps), one line per label."""
  fig, ax = plt.subplots(figsize=(5, 3))
  for i, (label, values) in enumerate(curves.items()):
    values = np.asarray(values)
    k = min(20, len(values))
    ax.plot(np.convolve(values, np.ones(k) / k, mode="valid"), label=label,
            ls=("-", "--", ":")[i // 10 % 3])
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.legend(fontsize=7)
  return save_figure(fig, workdir, name)


def plots(workdir: str, samples: dict, curves: dict, timeline: dict, boundary_sigma: float,
          training: dict) -> None:
  """Writes samples.png, samples.gif, per_timestep.png, synthesis_timeline.png, training.png."""
  sample_grid(workdir, "samples", samples)
  sample_gif(workdir, "samples", samples)
  per_timestep_plot(workdir, "per_timestep", curves, boundary_sigma)
  timeline_plot(workdir, "synthesis_timeline", timeline, boundary_sigma)
  training_curves(workdir, "training", training)


def standard_error(d: np.ndarray) -> float:
  """Standard error of the mean of paired differences (nan for a single seed)."""
  return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def paired_cells(a: dict, b: dict, keys) -> list[str]:
  """'mean ± standard error (k/n)' of a - b per metric, paired by seed (k: seeds where a < b)."""
  cells = []
  for key in keys:
    d = np.subtract(a[key + "_per_seed"], b[key + "_per_seed"])
    cells.append(f"{d.mean():+.4g} ± {standard_error(d):.2g} ({int((d < 0).sum())}/{len(d)})")
  return cells


def _header(c: DCMConfig, r: dict) -> str:
  s, d, full_steps = c.schedule, c.distill, r["teacher_steps"]
  acc = r["classifier_test_acc"]
  return (
      f"# DCM on moving digits ({r['data']})\n\n"
      f"Tiny unconditional rectified-flow DiT teacher (flow shift {s.shift} instead of 17, "
      f"{s.euler_steps}-step Euler grid, boundary index {s.boundary_index} -> s = "
      f"{r['boundary_sigma']:.3f}; the paper's boundary s = {dcm_paper.BOUNDARY_SIGMA} on "
      "HunyuanVideo latents carried to this clip size at equal signal-to-noise per dimension "
      f"(SD3 eq. 23): s = {r['paper_boundary_equivalent_sigma']:.3f}); students get "
      f"{d.semantic_steps} semantic + {d.detail_steps} detail phase steps (batch {d.batch}); "
      f"LoRA r={c.lora.rank}. Reference: "
      f"the teacher's {full_steps}-step Euler sample from the same noise (its temporal/detail "
      f"errors are 0 by construction). FD in the features of a video classifier (test digit acc "
      f"{acc['digit_acc']:.2f}, direction acc {acc['direction_acc']:.2f}) against "
      f"{c.data.n_test} held-out real clips; {c.evaluation.n_eval} samples per row; CM and DCM: "
      f"mean ± std over {d.student_seeds} distillation seeds on one teacher. Scale deviations "
      f"from the paper's code: pixel clips instead of VAE latents, no text / CFG, a "
      f"width-{c.model.width} DiT, LoRA r={c.lora.rank}"
      f"{' on attention and adaLN (paper: attention only)' if c.lora.adaln else ''}, "
      f"learning rates {d.lr_semantic:g}/{d.lr_detail:g}/{d.lr_discriminator:g} (paper "
      f"1e-6/5e-6/1e-5) and {d.semantic_steps} + {d.detail_steps} instead of 1500 + 1000 steps. "
      f"FD to teacher: the same classifier's FD against the teacher's {full_steps}-step samples "
      "instead of real clips (how close a student's samples are to its teacher's as a set). FD, "
      "FD to teacher, temporal and detail err: lower is better; frame coherence (how well each "
      "frame is its predecessor moved by up to 2 px): 1.0 on real clips, higher is better.\n")


def _methods_tables(m: dict) -> list[str]:
  cell = lambda v, k: (f"{v[k]:.4g} ± {v[k + '_std']:.2g}" if k + "_std" in v else f"{v[k]:.4g}")
  rows = [(name, steps, *(cell(m[name][steps], k) for k in METRICS))
          for name in ("teacher", "cm", "dcm") for steps in m[name]]
  wins = [(steps, *paired_cells(m["dcm"][steps], m["cm"][steps], LOWER_IS_BETTER))
          for steps in m["dcm"]]
  return [markdown_table(["method", "steps", "FD", "FD to teacher", "temporal err",
                          "detail err", "frame coherence"], rows),
          markdown_table(["DCM - CM, paired by seed (mean ± standard error)", "FD (DCM lower in)",
                          "FD to teacher", "temporal err", "detail err"], wins)]


def _swap_table(r: dict, steps: str) -> str:
  cm, fig3 = r["methods"]["cm"][steps], r["paper_fig3_vbench"]
  half = lambda sem, det: f"{sem.upper()}'s semantic steps, {det.upper()}'s detail steps"
  rows = [(f"VCM: {half('cm', 'cm')}", f"{fig3['VCM']:.1f}", *(["0"] * len(LOWER_IS_BETTER)))]
  rows += [(f"{name}: {half(*EXPERT_SWAPS[name])}", f"{fig3[name]:.1f}",
            *paired_cells(v, cm, LOWER_IS_BETTER)) for name, v in r["expert_swap"].items()]
  rows.append((f"SemE+DetE: {half('dcm', 'dcm')}", f"{fig3['SemE+DetE']:.1f}",
               *paired_cells(r["methods"]["dcm"][steps], cm, LOWER_IS_BETTER)))
  return markdown_table(["sampler halves (paper Fig. 3 name)", "paper VBench total",
                         "FD - CM (lower in)", "FD to teacher - CM", "temporal err - CM",
                         "detail err - CM"], rows)


def _dynamics_tables(r: dict) -> list[str]:
  """The single-expert CM's per-phase training statistics and the per-timestep sweeps."""
  diag = markdown_table(["CM training steps on phase", "mean CD loss", "mean grad norm"],
                        [(k, v["mean_cd_loss"], v["mean_grad_norm"])
                         for k, v in r["cm_phase_stats"].items()])
  rows = []
  for label, v in r["per_timestep"].items():
    sem = np.asarray(v["sigma"]) > r["boundary_sigma"]
    loss, grad = np.asarray(v["loss"]), np.asarray(v["grad_norm"])
    rows.append((label, loss[sem].mean(), loss[~sem].mean(), grad[sem].mean(),
                 grad[~sem].mean()))
  return [diag, markdown_table(["per-timestep sweep, mean over grid nodes", "loss semantic phase",
                                "loss detail phase", "grad norm semantic", "grad norm detail"],
                               rows, floatfmt=".2e")]


def _timeline_table(r: dict) -> str:
  tl = r["synthesis_timeline"]
  at_boundary = int(np.argmin(np.abs(np.subtract(tl["sigma"], r["boundary_sigma"]))))
  nodes = sorted(set(range(0, len(tl["sigma"]), 5)) | {at_boundary})
  return markdown_table(["teacher path: noise level s", "layout corr", "motion corr"],
                        [(("-> " if k == at_boundary else "") + f"{tl['sigma'][k]:.3f}",
                          tl["layout"][k], tl["motion"][k]) for k in nodes], floatfmt=".3f")


def markdown(c: DCMConfig, r: dict) -> str:
  """results.md: the header, then every table of the run's results `r`."""
  steps = c.evaluation.ablation_steps
  abl = markdown_table([f"variant ({steps} steps)", "FD", "temporal err", "detail err"],
                       [(LABELS[k], *(v[x] for x in ("fd", "temporal_err", "detail_err")))
                        for k, v in r["ablation"].items()])
  wdiff = r.get("expert_weight_difference", {})
  wdiff_t = markdown_table(["layer (all blocks)", "‖W_detail − W_semantic‖ / ‖W_semantic‖"],
                           sorted(wdiff.items(), key=lambda kv: -kv[1]), floatfmt=".3f")
  disc = r["discriminator"]
  disc_t = markdown_table(["stage with the GAN loss", "discriminator loss, last quarter"],
                          list(disc["last_quarter_loss"].items()), floatfmt=".3f")
  paper = markdown_table(["paper (VBench, Table 1)", "total", "quality", "semantic"],
                         [(k, *v) for k, v in r["paper_vbench_total_quality_semantic"].items()],
                         floatfmt=".2f")
  return "\n\n".join([
      _header(c, r), *_methods_tables(r["methods"]),
      f"Which DCM expert helps (paper Fig. 3 asked of our students): the {steps}-step sampler "
      "with its semantic steps (above the boundary) and detail steps (below) taken from CM or DCM "
      "of the same seed; paired differences against CM as above. Paper: VBench total (higher is "
      "better) of separately trained students, read off its chart.", _swap_table(r, str(steps)),
      f"Ablation (each DCM component off; distillation seed 0, {steps} steps):", abl,
      *(["Where two experts trained apart differ (the full detail expert of the ablation against "
         "its semantic expert; the paper's reason for the detail expert's form):", wdiff_t]
        if wdiff else []),
      f"Discriminator ({c.losses.gan_loss} loss; {disc['chance']:.3f} is the floor of one that "
      "cannot tell the student's jump from the teacher's target; near it, the discriminator has "
      "found no difference to teach the detail expert):", disc_t,
      "Per-phase dynamics of the single-expert CM (see per_timestep.png):",
      *_dynamics_tables(r),
      "Synthesis timeline (synthesis_timeline.png): correlation of the teacher's clean-clip "
      "estimate x0_hat = x - s v at each node with its final sample, "
      f"{c.evaluation.timeline_pool}x{c.evaluation.timeline_pool}-pooled frames (layout) and "
      "frame differences (motion); -> marks the phase boundary:", _timeline_table(r),
      "Paper figures, for direction (higher VBench is better; ours: lower is better):", paper])
