"""The decision cascade: teacher evidence, a cross-encoder and the student LLM, combined by learned rules."""
