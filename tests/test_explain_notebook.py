"""docs/tour.ipynb runs top to bottom in a fresh kernel (its cells assert the numbers they show)."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tour_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "docs" / "tour.ipynb", as_version=4)
    # "python3" is ipykernel's native spec: this interpreter (the test environment), with the
    # source tree on its path.
    src = str(ROOT / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "docs")}})
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {key for o in outputs for key in o.get("data", {})}
    assert {"text/html", "image/svg+xml"} <= kinds           # explanation, page, diagrams
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("srcdoc=" in h for h in html)                  # the trace's page
    assert any("image/gif;base64" in h for h in html)         # the animation
