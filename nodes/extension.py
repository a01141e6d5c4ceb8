"""The node list and the ComfyUI extension object (imports ComfyUI's ``comfy_api``)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .background import SyncHumanRemoveBackground
from .decoding import SyncHumanFeatureInjector, SyncHumanGaussianDecoder, SyncHumanMeshDecoder, SyncHumanSaveGaussians
from .export import SyncHumanExport
from .inputs import SyncHumanPreprocess, SyncHumanViewBatch
from .loader import SyncHumanModelLoader
from .render import SyncHumanRenderGaussians
from .sampling import SyncHumanJointSampler, SyncHumanSamplerSettings, SyncHumanStructuredLatentSampler

#: Every node of the pack, in pipeline order, then the optional helpers (also their order in the "SyncHuman" menu).
NODES: list[type[io.ComfyNode]] = [
    SyncHumanModelLoader,
    SyncHumanPreprocess,
    SyncHumanSamplerSettings,
    SyncHumanJointSampler,
    SyncHumanStructuredLatentSampler,
    SyncHumanViewBatch,
    SyncHumanFeatureInjector,
    SyncHumanMeshDecoder,
    SyncHumanGaussianDecoder,
    SyncHumanSaveGaussians,
    SyncHumanRenderGaussians,
    SyncHumanExport,
    SyncHumanRemoveBackground,
]


class SyncHumanExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
