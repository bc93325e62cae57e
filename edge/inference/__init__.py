"""Inference: backends behind one interface, the model registry, and the serving core."""
