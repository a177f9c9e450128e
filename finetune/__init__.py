"""Turns a data card into a trained interestbert model (examples, losses, the Accelerate loop, evaluation)."""
