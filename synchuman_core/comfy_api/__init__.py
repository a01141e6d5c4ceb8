"""A client of ComfyUI's HTTP + websocket API for many inputs on several servers (never imports ComfyUI).

``python -m synchuman_core workflow WORKFLOW_API.json --inputs photos/ --server http://gpu1:8188 --server
http://gpu2:8188 -o results/``: see :mod:`.runner`. :class:`ComfyServer` is one server's endpoints.
Progress is followed over the websocket with ``websocket-client`` (``pip install "synchuman[api]"``);
without it the client polls ``/history``.
"""

from .runner import RESULTS_LOG, WorkflowRun, WorkflowTemplate, output_refs, run_workflow_inputs
from .server import ComfyServer, PromptEvents, ServerUnavailable, WorkflowError

__all__ = [
    "RESULTS_LOG",
    "ComfyServer",
    "PromptEvents",
    "ServerUnavailable",
    "WorkflowError",
    "WorkflowRun",
    "WorkflowTemplate",
    "output_refs",
    "run_workflow_inputs",
]
