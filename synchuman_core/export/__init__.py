"""Mesh export: clean-up + UV + bake (``export_mesh``) and GLB / OBJ / PLY writers."""

from .api import FORMATS, ExportResult, ExportSettings, export_mesh, save_mesh
from .axes import convert_up_axis, zup_to_yup
from .glb import glb_bytes, write_glb
from .obj import write_obj
from .paths import check_output_target, resolve_output_path, sanitize_name
from .ply import write_ply

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportSettings",
    "check_output_target",
    "convert_up_axis",
    "export_mesh",
    "glb_bytes",
    "resolve_output_path",
    "sanitize_name",
    "save_mesh",
    "write_glb",
    "write_obj",
    "write_ply",
    "zup_to_yup",
]
