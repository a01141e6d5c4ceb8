"""Mesh geometry: rasteriser, Gaussian splatting, cameras of the SyncHuman views, clean-up (min-cut),
UV unwrapping, the official observations and texture baking.

``flexicubes`` (surface extraction) lives here too and is imported from its own module.
"""

from .bake import BakeSettings, bake_texture, bake_vertex_colors, pull_push_fill, refine_texture
from .cameras import (
    OrthoCamera,
    PerspectiveCamera,
    body_view_camera,
    face_view_camera,
    generated_to_true_orientation,
    hammersley_cameras,
    mirrored_generated_views,
    true_to_generated_orientation,
    turntable_cameras,
    yaw_pitch_camera,
)
from .cleanup import CleanupSettings, cleanup_mesh
from .mesh import TexturedMesh
from .mincut import MincutSettings, remove_invisible_mincut
from .observations import ObservationSettings, official_observations
from .raster import Rasterization, interpolate, rasterize
from .render import RenderedViews, render_generated_views, render_mesh
from .splat import GaussianCloud, SplatSettings, render_gaussians
from .turntable import render_turntable
from .uv import unwrap_uv
from .views import BakeView, views_from_generated

__all__ = [
    "GaussianCloud",
    "MincutSettings",
    "ObservationSettings",
    "PerspectiveCamera",
    "SplatSettings",
    "hammersley_cameras",
    "official_observations",
    "remove_invisible_mincut",
    "render_gaussians",
    "render_turntable",
    "turntable_cameras",
    "yaw_pitch_camera",
    "BakeSettings",
    "BakeView",
    "CleanupSettings",
    "OrthoCamera",
    "Rasterization",
    "RenderedViews",
    "TexturedMesh",
    "bake_texture",
    "bake_vertex_colors",
    "body_view_camera",
    "cleanup_mesh",
    "face_view_camera",
    "generated_to_true_orientation",
    "interpolate",
    "mirrored_generated_views",
    "pull_push_fill",
    "rasterize",
    "refine_texture",
    "render_generated_views",
    "render_mesh",
    "true_to_generated_orientation",
    "unwrap_uv",
    "views_from_generated",
]
