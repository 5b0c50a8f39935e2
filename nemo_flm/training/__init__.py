"""The training step, optimizer and schedule, FLOP accounting and the FLMModel (ModelPT)."""
