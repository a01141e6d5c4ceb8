"""Render node: turntable frames of the decoded Gaussians as an IMAGE batch (preview, video)."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .types import CATEGORY, GAUSSIANS

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}


class SyncHumanRenderGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SyncHumanRenderGaussians",
            display_name="SyncHuman Render Gaussians",
            category=CATEGORY,
            description="Renders the decoded 3D Gaussians on a circle around the subject (the official camera: "
                        "distance 2, 40° field of view) with our PyTorch splatting rasteriser. The frames are an "
                        "IMAGE batch: preview them, or feed a video-combine / Save Animated node.",
            inputs=[
                GAUSSIANS.Input("gaussians", tooltip="From SyncHuman Gaussian Decoder."),
                io.Int.Input("frames", default=36, min=1, max=720,
                             tooltip="Frames for one full turn (the last frame stops one step before the first, "
                                     "so the loop is seamless)."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Frame width and height in pixels."),
                io.Float.Input("elevation", default=15.0, min=-80.0, max=80.0, step=1.0,
                               tooltip="Camera height as an angle above the subject's middle, in degrees."),
                io.Combo.Input("background", options=list(BACKGROUNDS), default="white",
                               tooltip="Colour behind the subject."),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="[frames, resolution, resolution, 3].")],
        )

    @classmethod
    def execute(cls, gaussians, frames: int = 36, resolution: int = 512, elevation: float = 15.0,
                background: str = "white") -> io.NodeOutput:
        from synchuman_core.errors import InputImageError
        from synchuman_core.geometry.turntable import render_turntable

        if background not in BACKGROUNDS:
            raise InputImageError(f"SyncHuman Render Gaussians: background must be one of {list(BACKGROUNDS)}")
        bar = bridge.fraction_callback(int(frames))
        with bridge.oom_hint("rendering the Gaussians", "lower resolution"):
            images = render_turntable(
                gaussians, int(frames), resolution=int(resolution), pitch_deg=float(elevation),
                background=BACKGROUNDS[background], device=bridge.load_device(),
                progress=lambda _phase, done, total, _unit: bar("turntable", done / max(total, 1)),
            )
        return io.NodeOutput(images)
