"""python -m ditto_research.evaluate.report on a synthetic sweep: tables, plots, failures, the random-weights
warning."""

from __future__ import annotations

import pytest

from ditto_research.evaluate.report import main, runs_table, varying_params, write_report
from ditto_research.evaluate.results import find_runs, latest_sweep
from tests.evaluate.conftest import write_synthetic_run as _run


@pytest.fixture
def sweep(tmp_path):
    (tmp_path / "multirun" / "2025-12-31_23-59-59" / "0").mkdir(parents=True)  # an older sweep
    tmp_path = tmp_path / "multirun" / "2026-01-01_00-00-00"
    job = iter(range(100))
    for sampler, base in (("ddim", 2.0), ("dpmpp_2m", 3.0)):
        for steps in (5, 10, 25):
            _run(tmp_path / str(next(job)), sampler, steps, base * 10 / steps, lse=8.0 + steps / 10)
    _run(tmp_path / str(next(job)), "heun", 5, 0.0, status="failed")
    _run(tmp_path / str(next(job)), "ddim", 5, 1.0, latency=[120, 150, 400], mode="online")
    return tmp_path


def test_runs_are_found_in_job_order(sweep):
    runs = find_runs(sweep)
    assert [r.run_dir.rsplit("/", 1)[-1] for r in runs] == [str(i) for i in range(8)]
    assert latest_sweep(sweep) == sweep and latest_sweep(sweep.parent) == sweep


def test_varied_params_leave_out_what_the_sampler_decides(sweep):
    runs = find_runs(sweep)
    assert varying_params(runs) == ["sampler", "steps", "mode"]
    table = runs_table(runs)
    assert table.columns[:3] == ["sampler", "steps", "mode"] and "warp ms/frame" in table.columns
    assert len(table.rows) == 8


def test_report_files_plots_and_failures(sweep):
    md, page = write_report(sweep)
    text = md.read_text()
    for name in (
        "report_latency_stages.png",
        "report_fps_vs_steps.png",
        "report_sync_vs_steps.png",
        "report_online_latency_cdf.png",
    ):
        assert (sweep / name).stat().st_size > 1000 and f"]({name})" in text
    assert "Random weights" in text and "meaningless" in text
    assert "| heun | 5 | offline | failed |" in text
    assert "sampler=heun is not available" in text
    assert "| sync_proxy | no face found in any output frame | 1 |" in text  # metric notes, counted
    assert "<table>" in page.read_text() and "<b>Random weights</b>" in page.read_text()


def test_single_run_report_has_no_steps_plots(tmp_path):
    _run(tmp_path, "ddim", 10, 2.0)
    write_report(tmp_path)
    assert (tmp_path / "report_latency_stages.png").is_file()
    assert not (tmp_path / "report_fps_vs_steps.png").exists()
    assert "nothing (a single configuration)" in (tmp_path / "report.md").read_text()


def test_cli_on_a_folder_without_results(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    _run(tmp_path / "0", "ddim", 10, 2.0)
    assert main([str(tmp_path)]) == 0 and (tmp_path / "report.html").is_file()
