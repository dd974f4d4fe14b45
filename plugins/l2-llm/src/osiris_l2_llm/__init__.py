"""Osiris L2 planner: an OpenAI-compatible chat API chooses one candidate runbook."""
