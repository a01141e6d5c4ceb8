"""Condition encoders: DINOv2 (hub checkpoint keys), CLIP image/text and VAE builders, view prompts.

Submodules are imported on use (``from synchuman_core.encoders.dinov2 import DINOv2``) so that importing
this package does not import transformers or diffusers.
"""
