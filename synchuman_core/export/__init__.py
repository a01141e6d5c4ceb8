"""Mesh export: clean-up + UV + bake (``export_mesh``) and GLB / OBJ / PLY writers."""

from .api import FORMATS, ExportResult, ExportSettings, export_mesh, mesh_suffixes, save_mesh, stage_mesh
from .axes import convert_up_axis, zup_to_yup
from .glb import glb_bytes, write_glb
from .obj import write_obj
from .paths import check_output_target, output_folder, sanitize_name
from .ply import write_ply
from .writer import OutputSet, check_output_location, reserve_stem

__all__ = [
    "FORMATS",
    "OutputSet",
    "ExportResult",
    "ExportSettings",
    "check_output_location",
    "check_output_target",
    "convert_up_axis",
    "export_mesh",
    "glb_bytes",
    "mesh_suffixes",
    "output_folder",
    "reserve_stem",
    "sanitize_name",
    "save_mesh",
    "stage_mesh",
    "write_glb",
    "write_obj",
    "write_ply",
    "zup_to_yup",
]
