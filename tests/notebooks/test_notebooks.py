"""The notebooks execute top to bottom on tiny settings (so they never rot): nbclient runs each in a
kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbclient + ipykernel (dev extra)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient + ipykernel (dev extra)")
pytest.importorskip("ipykernel", reason="notebook tests need nbclient + ipykernel (dev extra)")

NOTEBOOKS = REPO_ROOT / "notebooks"


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list:
    return [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.get("output_type") == kind or kind in o.get("data", {})
    ]


def test_quickstart_runs_the_pipeline_and_shows_frames_and_video(tmp_path, monkeypatch):
    monkeypatch.setenv("DITTO_NOTEBOOK_SECONDS", "0.3")
    notebook = execute("quickstart.ipynb", tmp_path)
    assert (tmp_path / "outputs" / "notebooks" / "quickstart.mp4").is_file()
    assert len(outputs(notebook, "image/png")) >= 2  # the portrait and the frame strip
    assert any("<video" in o["data"].get("text/html", "") for o in outputs(notebook, "text/html"))
    assert not outputs(notebook, "error")


def test_analyze_sweep_loads_a_sweep_and_plots(tmp_path, monkeypatch):
    from tests.evaluate.conftest import write_synthetic_run as _run

    sweep = tmp_path / "multirun" / "2026-01-01_00-00-00"
    for job, (sampler, steps) in enumerate([("ddim", 5), ("ddim", 10), ("euler", 5), ("euler", 10)]):
        _run(sweep / str(job), sampler, steps, 20.0 / steps, lse=7.0 + steps / 10)
    _run(sweep / "4", "heun", 5, 0.0, status="failed")
    monkeypatch.setenv("DITTO_SWEEP_DIR", str(tmp_path / "multirun"))
    notebook = execute("analyze_sweep.ipynb", tmp_path)
    text = "".join(o.get("text", "") for o in outputs(notebook, "stream"))
    assert (
        "5 runs, varied: ['sampler', 'steps']" in text and "run sampler=heun steps=5 -> sampler=heun" in text
    )
    assert len(outputs(notebook, "image/png")) >= 3
    assert any("<table>" in o["data"]["text/html"] for o in outputs(notebook, "text/html"))
