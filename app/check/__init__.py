"""The float-reference self-check: agreement between the live model and its float twin, and the likely cause when they differ."""
