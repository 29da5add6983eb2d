"""Model zoo: Hugging Face MoE checkpoints (config.json + safetensors) <-> MoELM variables."""
