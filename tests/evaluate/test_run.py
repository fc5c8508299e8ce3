"""The evaluate app end to end on tiny settings: results files, failures recorded, bad inputs stopped
early."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditto_research.errors import CheckpointError, ConfigError, InputError
from ditto_research.evaluate.results import find_runs, load_run
from ditto_research.evaluate.run import evaluate_from_overrides
from tests.evaluate.conftest import TINY, write_csv


@pytest.fixture(scope="module")
def one_run(eval_media, syncnet_weights, tmp_path_factory):
    """One run over two clips, the second of which has no face (fails at registration); every metric on;
    the default logger (W&B, offline, inside the run folder)."""
    folder = tmp_path_factory.mktemp("one_run")
    dataset = write_csv(
        folder / "set.csv",
        [
            (str(eval_media["face"]), str(eval_media["speech"])),
            (str(eval_media["wall"]), str(eval_media["speech"])),
        ],
    )
    with pytest.MonkeyPatch.context() as mp:
        for key in (
            "WANDB_MODE",
            "WANDB_DIR",
            "WANDB_CACHE_DIR",
            "WANDB_DATA_DIR",
            "WANDB_ARTIFACT_DIR",
            "WANDB_CONFIG_DIR",
        ):
            mp.delenv(key, raising=False)
        record = evaluate_from_overrides(
            [*TINY, f"dataset={dataset}", f"syncnet_weights={syncnet_weights}", "max_seconds=0.4"],
            output_dir=folder / "run",
        )
    return record


def test_run_writes_results_and_goes_on_after_a_failed_clip(one_run):
    assert one_run.status == "ok"
    good, bad = one_run.clips
    assert good.status == "ok" and good.frames == math.ceil(0.4 * 25)
    assert bad.status == "failed" and "no face found in wall.png" in bad.error
    assert one_run.summary["clips_ok"] == 1 and one_run.summary["clips_failed"] == 1
    run_dir = Path(one_run.run_dir)
    assert (run_dir / "clips.csv").read_text().count("\n") == 3  # header + two clips
    again = load_run(run_dir)
    assert again.clips[1].error == bad.error and again.params["sampler"] == "ddim"


def test_latency_and_stages_are_recorded(one_run):
    good = one_run.clips[0]
    assert good.fps > 0 and good.rtf > 0 and good.first_frame_ms is not None
    assert {s.stage for s in good.stages} == {"motion", "stitch", "warp", "decode", "paste"}
    warp = next(s for s in good.stages if s.stage == "warp")
    assert warp.calls == good.frames and warp.p50_ms <= warp.p95_ms <= warp.max_ms
    assert one_run.summary["load_s"] > 0 and one_run.summary["peak_rss_mb"] > 0
    stages_csv = (Path(one_run.run_dir) / "stages.csv").read_text()
    assert "(all),warp," in stages_csv


def test_metrics_and_the_reasons_for_missing_ones(one_run):
    good = one_run.clips[0]
    assert good.metrics["lip_energy"] > 0 and math.isfinite(good.metrics["yaw_range_deg"])
    # Random tiny weights render no face: both lip-sync metrics say so instead of inventing numbers.
    assert "no face" in good.notes["sync_proxy"] and "no face" in good.notes["syncnet"]
    assert "lse_d" not in good.metrics


def test_video_and_samples_are_kept(one_run):
    from ditto_research.media.writer import probe_video

    good = one_run.clips[0]
    frames, fps, *_ = probe_video(good.video)
    assert frames == good.frames and fps == 25.0
    assert len(good.samples) == 4 and all(Path(p).is_file() for p in good.samples)


def test_default_logger_writes_an_offline_wandb_run_in_the_run_folder(one_run):
    assert one_run.logger_error is None
    runs = list((Path(one_run.run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert not (Path(one_run.run_dir).parent / "wandb").exists()  # nothing next to the run folder
    assert json.loads((Path(one_run.run_dir) / "results.json").read_text())["params"]["sampler"] == "ddim"


def test_cli_wandb_failure_exits_non_zero_after_writing_the_results(eval_media, tmp_path):
    """The default logger failing to start (here: a wandb whose init raises, in front of the real one)."""
    fake = tmp_path / "fake" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class Settings(dict):\n    pass\n\n\n"
        "def init(**kwargs):\n    raise RuntimeError('simulated W&B outage')\n"
    )
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    run_dir = tmp_path / "run"
    proc = _cli(
        *TINY,
        f"dataset={good}",
        "max_seconds=0.2",
        "metrics=[motion]",
        "report=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        pythonpath=tmp_path / "fake",
    )
    assert proc.returncode == 2, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and (run_dir / "clips.csv").read_text().count("\n") == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: logger: {results['logger_error']}"], proc.stderr
    assert "W&B could not start in mode offline (RuntimeError: simulated W&B outage)" in errors[0]
    assert errors[0].endswith("or use logger=csv (results.json / clips.csv are written either way)")


def test_bad_evaluation_inputs_stop_before_running(eval_media, tmp_path):
    dataset = write_csv(tmp_path / "set.csv", [(str(eval_media["face"]), "missing.wav")])
    with pytest.raises(InputError, match="missing.wav"):
        evaluate_from_overrides([*TINY, f"dataset={dataset}"], output_dir=tmp_path / "a")
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    with pytest.raises(CheckpointError, match="notes.txt cannot be read as a torch state dict"):
        evaluate_from_overrides(
            [*TINY, f"dataset={good}", f"syncnet_weights={eval_media['notes']}"], output_dir=tmp_path / "b"
        )
    assert not (tmp_path / "b" / "results.json").exists()


def test_syncnet_weights_of_another_network_are_refused(eval_media, tmp_path):
    import torch

    other = tmp_path / "other.model"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    with pytest.raises(CheckpointError, match="do not match SyncNet v2"):
        evaluate_from_overrides(
            [*TINY, f"dataset={good}", f"syncnet_weights={other}"], output_dir=tmp_path / "r"
        )


def test_a_configuration_that_cannot_run_is_recorded(eval_media, tmp_path):
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    overrides = ["model=ditto", "model.checkpoint_root=/nonexistent/ckpt"]
    record = evaluate_from_overrides([*TINY, f"dataset={good}", *overrides], output_dir=tmp_path / "r")
    assert record.status == "failed" and "/nonexistent/ckpt" in record.error
    assert load_run(tmp_path / "r").error == record.error


def test_an_option_the_sampler_does_not_take_fails_at_compose_time(eval_media, tmp_path):
    """A key the chosen sampler's schema lacks is an unknown key: refused before anything runs or is
    written."""
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    with pytest.raises(
        ConfigError, match=r"sampler\.eta is not a key of sampler=dpmpp_2m; valid keys: name, steps"
    ):
        evaluate_from_overrides(
            [*TINY, f"dataset={good}", "sampler=dpmpp_2m", "sampler.eta=0.5"], output_dir=tmp_path / "r"
        )
    assert not (tmp_path / "r").exists()


def _cli(*args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ditto_research.evaluate.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def test_cli_missing_dataset_is_one_line(tmp_path):
    proc = _cli("dataset=nope.csv", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.csv does not exist" in proc.stderr, proc.stderr


def test_cli_dataset_that_is_not_utf8_is_one_line(tmp_path):
    """A Latin-1 CSV (a spreadsheet's default on some systems): the file, the byte and the fix, exit 2."""
    dataset = tmp_path / "set.csv"
    dataset.write_bytes("source,audio\nvisage.png,été.wav\n".encode("latin-1"))
    proc = _cli(f"dataset={dataset}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"error: dataset file {dataset} is not UTF-8 text (byte 0xe9 at offset 24, line 2); save it as UTF-8 "
        "(with or without BOM)"
    )


def test_cli_sweep_goes_on_after_failed_runs_and_reports_them(eval_media, tmp_path):
    good = write_csv(tmp_path / "good.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    sweep = tmp_path / "sweep"
    proc = _cli(
        "-m",
        *TINY,
        f"dataset={good}",
        "model=ditto",
        f"model.checkpoint_root={tmp_path}/none",
        "sampler.steps=2,3",
        f"hydra.sweep.dir={sweep}",
        "logger=csv",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    runs = find_runs(sweep)
    assert [r.params["steps"] for r in runs] == [2, 3] and all(r.status == "failed" for r in runs)
    report = (sweep / "report.md").read_text()
    assert "Runs that failed" in report and report.count("checkpoint") >= 2
    assert (sweep / "report.html").is_file()
    assert (sweep / "runs.csv").read_text().count("\n") == 3  # the csv logger: header + one row per run


def test_failed_clips_are_the_last_line_and_strict_exits_non_zero(eval_media, tmp_path):
    dataset = write_csv(
        tmp_path / "set.csv",
        [
            (str(eval_media["face"]), str(eval_media["speech"])),
            (str(eval_media["wall"]), str(eval_media["speech"])),
        ],
    )
    common = [
        *TINY,
        f"dataset={dataset}",
        "max_seconds=0.2",
        "metrics=[motion]",
        "report=false",
        "logger=none",
    ]
    lenient = _cli(*common, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stderr
    last = lenient.stderr.strip().splitlines()[-1]
    assert last.startswith("warning: 1 of 2 clips failed") and last.endswith(
        "pass strict=true to exit non-zero when a clip fails"
    )
    strict = _cli(*common, "strict=true", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert strict.returncode == 2 and strict.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 2 clips failed"
    )
    assert json.loads((tmp_path / "b" / "results.json").read_text())["status"] == "ok"
