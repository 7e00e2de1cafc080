"""Executes every notebook in notebooks/ headless (nbclient, as `jupyter nbconvert --execute` does),
against the lake that ORDERLAKE_LAKE and AZURE_STORAGE_* name, and prints one JSON object:
{notebook: {"summary": <the figures it wrote>, "images": <plots rendered>}}.

A cell that raises fails the run with the notebook's own traceback. Executed copies go to OUT_DIR,
never over the committed notebooks, so they stay output-free in git.

usage: run_notebooks.py OUT_DIR
"""
import json
import os
import pathlib
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

root = pathlib.Path(__file__).resolve().parents[2] / "notebooks"
out_dir = pathlib.Path(sys.argv[1])
out_dir.mkdir(parents=True, exist_ok=True)
results = {}
for path in sorted(root.glob("*.ipynb")):
    summary = out_dir / f"{path.stem}.json"
    os.environ["ORDERLAKE_NOTEBOOK_SUMMARY"] = str(summary)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root)}})
    try:
        client.execute()
    except CellExecutionError as e:
        print(f"{path.name} failed:\n{e}", file=sys.stderr)
        sys.exit(1)
    finally:
        nbformat.write(nb, out_dir / path.name)
    images = sum(
        1
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    )
    results[path.stem] = {"summary": json.loads(summary.read_text()), "images": images}
print(json.dumps(results))
