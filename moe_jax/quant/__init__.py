"""Post-training quantization on arrays: the pieces that MoEQuant, EAQuant and Fate build on.

Modules: `core` (QuantSpec / ActSpec, RTN quantize / dequantize / fake_quant in compressed-tensors'
conventions, MSE clip search, per-token and per-tensor activation fake quantization), `pack`
(b-bit values into int32 words, the "pack-quantized" layout), `hessian` (streaming, optionally
per-token weighted GPTQ Hessians: AGQ), `gptq` (blocked GPTQ, jitted and vmapped over experts).
Whole models: `calibrate` (what each linear and expert receives, block by block), `apply` (RTN or
GPTQ / AGQ of every linear of an LM), `export` (compressed-tensors' pack-quantized HF directory).
MoEQuant: `ebss` (expert-balanced self-sampling), `moequant_experiment`, `moequant_report`.
EAQuant: `activation` (WxAy fake quantization in the linen modules), `eaquant` (the pipeline),
`eaquant_rotation`, `eaquant_smooth`, `eaquant_router`, `eaquant_balance`, `eaquant_experiment`.
"""
