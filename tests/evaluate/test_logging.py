"""Experiment loggers: the shared CSV, W&B offline inside the run folder, unwritable folders."""

from __future__ import annotations

import csv
import sys

import pytest

from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import LoggerConfig
from ditto_research.evaluate.logging import CsvLogger, NullLogger, make_logger
from ditto_research.evaluate.results import ClipResult, RunRecord


def _record(folder, steps=10, extra=None):
    params = {"sampler": "ddim", "steps": steps, **(extra or {})}
    return RunRecord(str(folder), params=params, summary={"fps": 2.5, "clips": 1},
                     clips=[ClipResult("c1", "face.png", "a.wav", frames=3, fps=2.5)])


def test_null_logger_for_logger_null(tmp_path):
    assert isinstance(make_logger(None, tmp_path, run_name="r", sweep_dir=None), NullLogger)


def test_csv_logger_appends_one_row_per_run_to_the_sweep_file(tmp_path):
    cfg = LoggerConfig(name="csv")
    for job, steps in enumerate((5, 10)):
        logger = make_logger(cfg, tmp_path / str(job), run_name=str(job), sweep_dir=tmp_path)
        logger.finish(_record(tmp_path / str(job), steps, extra={"guidance": 1.5} if job else None))
    with (tmp_path / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["param.steps"] for r in rows] == ["5", "10"] and rows[0]["fps"] == "2.5"
    assert "guidance" in rows[1]["extra"]  # a parameter the header does not have is kept, not dropped


def test_unwritable_folders_are_config_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        CsvLogger(blocker / "runs.csv")
    pytest.importorskip("wandb")
    with pytest.raises(ConfigError, match="not writable"):
        make_logger(LoggerConfig(name="wandb", dir=str(blocker / "wandb")), tmp_path, run_name="r", sweep_dir=None)


def test_wandb_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"pip install 'ditto-research\[wandb\]'"):
        make_logger(LoggerConfig(name="wandb"), tmp_path, run_name="r", sweep_dir=None)


def test_wandb_offline_run_stays_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import cv2
    import numpy as np

    for key in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    sample = tmp_path / "sample.png"
    cv2.imwrite(str(sample), np.zeros((32, 32, 3), np.uint8))
    record = _record(tmp_path)
    record.clips[0].samples = [str(sample)]
    logger = make_logger(LoggerConfig(name="wandb"), tmp_path, run_name="test", sweep_dir=None)
    logger.start(record)
    logger.log_clip(0, record.clips[0])
    logger.finish(record)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
