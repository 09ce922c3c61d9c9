"""Execute notebooks and save the pictures of their tagged cells under ``docs/``.

A code cell tagged ``picture:NAME`` has its PNG output written to ``docs/NAME.png``, so the
pictures the README shows are exactly what the notebooks draw. Run from anywhere::

    python notebooks/save_pictures.py                 # every notebook with a tagged cell
    python notebooks/save_pictures.py mcp_proxy       # one notebook

The notebooks run as in CI (offline, scripted humans), with this interpreter as the kernel.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
DOCS = NOTEBOOKS.parent / "docs"
TAG = "picture:"


def _names(nb: nbformat.NotebookNode) -> list[str]:
    return [t[len(TAG):] for c in nb.cells for t in c.get("metadata", {}).get("tags", [])
            if t.startswith(TAG)]


def save(path: Path, kernels: KernelSpecManager) -> list[Path]:
    """Execute one notebook; write each tagged cell's last PNG output to docs/NAME.png."""
    nb = nbformat.read(path, as_version=4)
    if not _names(nb):
        return []
    manager = AsyncKernelManager(kernel_name="agentguard", kernel_spec_manager=kernels)
    NotebookClient(nb, km=manager, timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    written = []
    for cell in nb.cells:
        names = [t[len(TAG):] for t in cell.get("metadata", {}).get("tags", [])
                 if t.startswith(TAG)]
        images = [o["data"]["image/png"] for o in cell.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        for name in names:
            if not images:
                raise SystemExit(f"{path.name}: the cell tagged {TAG}{name} drew no picture")
            target = DOCS / f"{name}.png"
            target.write_bytes(base64.b64decode(images[-1]))
            written.append(target)
    return written


def main(argv: list[str]) -> None:
    paths = ([NOTEBOOKS / f"{a.removesuffix('.ipynb')}.ipynb" for a in argv]
             or sorted(NOTEBOOKS.glob("*.ipynb")))
    with tempfile.TemporaryDirectory() as root:
        spec = Path(root) / "agentguard"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "agentguard", "language": "python"}))
        kernels = KernelSpecManager(kernel_dirs=[root])
        for path in paths:
            for target in save(path, kernels):
                print(f"{path.name}: {target.relative_to(NOTEBOOKS.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
