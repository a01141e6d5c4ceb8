"""``python -m synchuman_core workflow``: an API-format workflow on one or more running ComfyUI servers.

Examples::

    # one run of the workflow as saved, on the local ComfyUI; prints the /history outputs
    python -m synchuman_core workflow api_workflows/synchuman_image_to_textured_mesh.json

    # every image of photos/ through the workflow's LoadImage node, spread over two servers; results in out/
    python -m synchuman_core workflow api_workflows/synchuman_image_to_textured_mesh.json \\
        --inputs photos/ --server http://gpu1:8188 --server http://gpu2:8188 -o out/ --seed 43
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_workflow_parser", "cmd_workflow"]


def cmd_workflow(a: argparse.Namespace) -> int:
    from .runner import WorkflowTemplate, run_workflow_inputs

    template = WorkflowTemplate.from_file(a.workflow, image_node=a.image_node, seed=a.seed)
    out_dir = Path(a.output) if a.output else Path("synchuman_workflow_results")
    run = run_workflow_inputs(template, a.server or ["http://127.0.0.1:8188"], out_dir, inputs=a.inputs,
                              timeout=a.timeout, overwrite=a.overwrite, progress=not a.quiet)
    sys.stdout.write(json.dumps({"counts": run.counts, "elapsed_s": run.elapsed_s, "dead_servers": run.dead_servers,
                                 "results": str(out_dir / "workflow_results.json"),
                                 "records": run.records}, indent=2, default=str) + "\n")
    return 0 if run.counts.get("failed", 0) == 0 else 1


def add_workflow_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "workflow", help="run an API-format workflow on one or more running ComfyUI servers",
        description="Upload each input, queue the workflow, follow it over the websocket and download its "
                    "outputs; inputs of a server that dies are retried on the others. A client of ComfyUI's "
                    "queue: start the servers yourself (python main.py --listen on each GPU machine).",
        epilog=__doc__.split("Examples::", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Workflow > Export (API))")
    p.add_argument("--server", action="append", default=None,
                   help="ComfyUI address, repeat for several (default http://127.0.0.1:8188)")
    p.add_argument("--inputs", default=None, help="a folder of images (or one image): one run per image, each "
                   "put into the workflow's LoadImage node")
    p.add_argument("--image-node", default=None, help="id of the node that receives the inputs when the workflow "
                   "has several LoadImage nodes")
    p.add_argument("--seed", type=int, default=None, help="set every 'seed' input of the workflow to this value")
    p.add_argument("-o", "--output", default=None, help="folder for the downloaded outputs and "
                   "workflow_results.json (default ./synchuman_workflow_results)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one input may take on a server")
    p.add_argument("--overwrite", action="store_true", help="run inputs again even when done before")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func=cmd_workflow)
