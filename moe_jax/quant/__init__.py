"""Post-training quantization on arrays: the pieces that MoEQuant, EAQuant and Fate build on.

Modules: `core` (QuantSpec / ActSpec, RTN quantize / dequantize / fake_quant in compressed-tensors'
conventions, MSE clip search, per-token and per-tensor activation fake quantization), `pack`
(b-bit values into int32 words, the "pack-quantized" layout), `hessian` (streaming, optionally
per-token weighted GPTQ Hessians: AGQ), `gptq` (blocked GPTQ, jitted and vmapped over experts).
"""
