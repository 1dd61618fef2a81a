"""The EPM-RL student LLM: loading, prompts, LoRA SFT, GRPO and inference (label and explain modes)."""
