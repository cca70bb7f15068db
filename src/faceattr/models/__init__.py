"""Backbones, heads and self-describing checkpoints."""
