"""Stand-in of ``comfy_api.latest._ui``: the UI outputs core 3D nodes return."""

from __future__ import annotations


class _UIOutput:
    def as_dict(self) -> dict:
        raise NotImplementedError


class PreviewUI3D(_UIOutput):
    def __init__(self, model_file, camera_info, **kwargs):
        self.model_file = model_file
        self.camera_info = camera_info
        self.bg_image_path = None

    def as_dict(self) -> dict:
        return {"result": [self.model_file, self.camera_info, self.bg_image_path]}


__all__ = ["PreviewUI3D"]
