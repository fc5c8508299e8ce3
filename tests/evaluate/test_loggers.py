"""Experiment loggers: the shared CSV, W&B offline inside the run folder, unwritable folders."""

from __future__ import annotations

import csv
import os
import sys

import pytest

from ditto_research.errors import ConfigError, InputError
from ditto_research.evaluate.config import LoggerConfig
from ditto_research.evaluate.loggers import WANDB_FOLDERS, CsvLogger, NullLogger, make_logger
from ditto_research.evaluate.results import ClipResult, RunRecord


def _record(folder, steps=10, extra=None):
    params = {"sampler": "ddim", "steps": steps, **(extra or {})}
    return RunRecord(
        str(folder),
        params=params,
        summary={"fps": 2.5, "clips": 1},
        clips=[ClipResult("c1", "face.png", "a.wav", frames=3, fps=2.5)],
    )


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


def test_csv_logger_reads_a_shared_file_saved_with_a_byte_order_mark(tmp_path):
    """A runs.csv opened and saved by a spreadsheet: its header is read like every CSV (BOM dropped), so the
    next row lands in its columns; a file that is not UTF-8 is one line naming it."""
    path = tmp_path / "runs.csv"
    path.write_bytes(b"\xef\xbb\xbfrun_dir,status,error,param.sampler,param.steps,extra\n")
    CsvLogger(path).finish(_record(tmp_path / "r1"))
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["run_dir"] == str(tmp_path / "r1") and rows[0]["param.steps"] == "10"
    assert "run_dir" not in rows[0]["extra"]  # not an "extra" parameter: the header has it
    path.write_bytes("run_dir,état\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"logger.path .*runs.csv is not UTF-8 text \(byte 0xe9 at offset 8"):
        CsvLogger(path).finish(_record(tmp_path / "r2"))


def test_unwritable_folders_are_config_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        CsvLogger(blocker / "runs.csv")
    with pytest.raises(
        ConfigError, match=r"logger=wandb: the W&B folder .* is not writable .* or use logger=csv"
    ):
        make_logger(
            LoggerConfig(name="wandb", dir=str(blocker / "wandb")), tmp_path, run_name="r", sweep_dir=None
        )


def test_wandb_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        ConfigError,
        match=r"wandb package does not import \(ModuleNotFoundError: .*\): reinstall it with "
        r"`pip install 'wandb>=0\.28'`.*, or use logger=csv",
    ) as info:
        make_logger(LoggerConfig(name="wandb"), tmp_path, run_name="r", sweep_dir=None)
    assert "\n" not in str(info.value) and "[wandb]" not in str(info.value)


@pytest.fixture
def clean_wandb_env(monkeypatch):
    """No W&B folder / mode variables from the user's shell."""
    for key in (*(k for k, _ in WANDB_FOLDERS), "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)


def test_wandb_failing_to_start_is_one_line_and_leaves_the_environment(
    tmp_path, monkeypatch, clean_wandb_env
):
    import wandb

    def broken_init(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)\ncall wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = make_logger(LoggerConfig(name="wandb", mode="online"), tmp_path, run_name="r", sweep_dir=None)
    with pytest.raises(
        ConfigError,
        match=r"W&B could not start in mode online \(UsageError: api_key not configured "
        r"\(no-tty\)\): .*wandb login.*or use logger=csv",
    ) as info:
        logger.start(_record(tmp_path))
    assert "\n" not in str(info.value)
    assert not [k for k, _ in WANDB_FOLDERS if k in os.environ]


def test_wandb_offline_run_stays_in_the_run_folder(tmp_path, clean_wandb_env):
    import cv2
    import numpy as np

    sample = tmp_path / "sample.png"
    cv2.imwrite(str(sample), np.zeros((32, 32, 3), np.uint8))
    record = _record(tmp_path)
    record.clips[0].samples = [str(sample)]
    logger = make_logger(LoggerConfig(name="wandb"), tmp_path, run_name="test", sweep_dir=None)
    logger.start(record)
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "wandb" / "cache")
    logger.log_clip(0, record.clips[0])
    logger.finish(record)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    # The next run (a sweep job in the same process) gets its own folders, not this run's.
    assert not [k for k, _ in WANDB_FOLDERS if k in os.environ]
