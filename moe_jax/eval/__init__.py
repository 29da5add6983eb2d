"""Evaluation of any loaded LM: held-out bits per byte, a zero-shot task suite, agreement.

Modules: `encoding` (text -> ids: bytes or the model's own tokenizer), `forward` (batched, jitted
row scoring), `bpb` (bits per byte and top-1 accuracy per domain), `tasks` (multiple-choice items
from held-out documents), `multiple_choice` (harness-style log-likelihood scoring), `agreement`
(KL, top-1 and routing agreement with a reference model), `evaluate` (EvalConfig, evaluate,
markdown_table: the one entry point).
"""
from moe_jax.eval.evaluate import EvalConfig, evaluate, markdown_table

__all__ = ["EvalConfig", "evaluate", "markdown_table"]
