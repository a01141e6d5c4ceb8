"""Checkpoint files: strict state-dict loading, model folders, downloads, tiny checkpoints."""
