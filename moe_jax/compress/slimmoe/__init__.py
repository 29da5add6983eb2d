"""SlimMoE (arXiv 2506.18349): structured compression of an MoE LM by expert slimming and
multi-stage distillation.

importance.py: per-weight saliency (Taylor on the distillation loss; magnitude, random) and its
reduction to expert neurons and GQA groups; slimming.py: the smaller LMConfig and variables;
schedule.py: the stages of slimming and distillation through the trainer's hooks;
slimmoe_experiment.py / slimmoe_report.py: the experiment (rows, baselines, claims) and its
table and plot.
"""
