"""python -m ditto_research.train with model=tiny on small synthetic datasets: bad inputs refused before any
step, one batch overfitted, a stopped run resumed onto the same loss curve, the exported lmdm.pth running in
inference exactly like the module it came from, the --help."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from ditto_research.config import compose, to_config
from ditto_research.data import DatasetWriter, PreparedClip
from ditto_research.data.clip import CLIP_ARRAYS
from ditto_research.errors import DittoError, InputError
from ditto_research.models import load_network
from ditto_research.train.config import TrainConfig, register_train_configs
from ditto_research.train.export import save_lmdm
from ditto_research.train.run import run_training

FAST = [
    "model=tiny",
    "face=mediapipe",
    "audio_encoder=untrained",
    "progress=false",
    "logger=csv",
    "train.num_workers=0",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.val_windows=4",
    "train.val_t_grid=3",
    "train.val_sample_windows=1",
    "sampler.steps=2",
]


def smooth_clip(clip_id: str, frames: int, seed: int, source: str | None = None) -> PreparedClip:
    """A clip of slowly varying random features (motion a random walk), as real features vary."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, tail in CLIP_ARRAYS.items():
        steps = rng.standard_normal((frames, *tail)).astype(np.float32) * 0.05
        arrays[name] = np.cumsum(steps, axis=0) + rng.standard_normal(tail).astype(np.float32)
    arrays["emotion"] = np.full((frames, 8), 1 / 8, dtype=np.float32)
    arrays["audio_rms"] = np.abs(rng.standard_normal(frames)).astype(np.float32)
    meta = {"source": source or f"{clip_id}.mp4", "segment": [0, frames], "fps": 25.0, "flipped": False}
    return PreparedClip(clip_id, arrays, meta)


def make_dataset(folder: Path, clips: list[PreparedClip]) -> Path:
    writer = DatasetWriter(folder, {"made_by": "tests"})
    for clip in clips:
        writer.add(clip)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train") / "ds"
    return make_dataset(folder, [smooth_clip(f"video{i}", 100 + 10 * i, i) for i in range(4)])


def config(data: Path, out: Path, *extra: str) -> TrainConfig:
    register_train_configs()
    return to_config(compose("train", [*FAST, f"data={data}", f"output_dir={out}", *extra]), TrainConfig)


def losses(folder: Path) -> dict[int, float]:
    """train/loss by step from every attempt's CSV log (a resumed run writes a version of its own)."""
    out = {}
    for path in sorted((folder / "csv").glob("version_*/metrics.csv")):
        with open(path, encoding="utf-8") as f:
            out.update(
                {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}
            )
    return out


class StopAt(L.Callback):
    """Stops the run after ``step`` optimizer steps, as a preempted job would stop."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_a_stopped_run_resumes_onto_the_same_loss_curve(dataset, tmp_path):
    common = (
        "train.max_steps=8",
        "train.val_fraction=0",
        "trainer.log_every_n_steps=1",
        "train.optimizer=adan",
    )
    whole = run_training(config(dataset, tmp_path / "whole", *common, "trainer.ckpt_every=4"))
    assert whole.steps == 8
    first = run_training(config(dataset, tmp_path / "parts", *common, "trainer.ckpt_every=4"), [StopAt(4)])
    assert first.steps == 4 and (tmp_path / "parts" / "checkpoints" / "last.ckpt").is_file()
    second = run_training(config(dataset, tmp_path / "parts", *common, "trainer.ckpt_every=4", "resume=last"))
    assert second.steps == 8
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "parts")
    assert sorted(a) == sorted(b) == list(range(8))
    assert [a[s] for s in range(8)] == [b[s] for s in range(8)]  # bit for bit, every step
    wa = torch.load(whole.lmdm_path)["model_state_dict"]
    wb = torch.load(second.lmdm_path)["model_state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_one_batch_is_overfitted(dataset, tmp_path):
    from torch.utils.data import DataLoader

    from ditto_research.train.data import WindowStream
    from ditto_research.train.module import LmdmTraining

    cfg = config(dataset, tmp_path, "train.max_steps=60", "train.lr=3e-3", "train.warmup_steps=0")
    cfg.train.ema_decay = None
    lmdm = load_network("lmdm", None, seed=1, tiny=True, dropout=0.0).train()
    from ditto_research.data import PreparedDataset

    stream = WindowStream(
        list(PreparedDataset(dataset)),
        seq_frames=80,
        flags=_flags(),
        seed=0,
        num_timesteps=1000,
        cond_drop_prob=0,
    )
    batch = {k: torch.stack([stream[p][k] for p in range(4)]) for k in stream[0]}
    module = LmdmTraining(lmdm, cfg.train, cfg.sampler)

    def loss() -> float:
        lmdm.eval()
        kwargs = {"t": batch["t"], "noise": batch["noise"], "keep_mask": batch["keep"]}
        value = module.objective(lmdm, batch["kp_seq"], batch["kp_cond"], batch["aud_cond"], **kwargs)
        return float(value.total)

    before = loss()
    trainer = L.Trainer(max_steps=60, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, DataLoader([batch] * 60, batch_size=None))
    after = loss()
    assert after < before / 20, (before, after)


def _flags():
    from ditto_research.motion.conditions import ConditionFlags

    return ConditionFlags()


def test_exported_weights_run_in_inference_as_the_module_does(dataset, tmp_path):
    from ditto_research.examples import example_source, synthetic_speech
    from ditto_research.pipeline.engine import Engine

    result = run_training(config(dataset, tmp_path / "run", "train.max_steps=3", "train.val_fraction=0"))
    state = torch.load(result.lmdm_path)["model_state_dict"]
    trained = load_network("lmdm", None, tiny=True)
    trained.load_state_dict(state)
    assert set(state) == set(trained.state_dict())  # the module's own names: the official layout's
    assert all(not k.startswith(("ema.", "lmdm.", "module.")) for k in state)

    overrides = ["model=tiny", "face=mediapipe", "audio_encoder=untrained", "progress=false"]
    from_file = Engine.from_overrides([*overrides, f"model.lmdm_path={result.lmdm_path}"])
    in_memory = Engine.from_overrides(overrides)
    in_memory.networks.lmdm.module = trained.to(in_memory.device).eval()
    source = example_source(tmp_path)
    audio = synthetic_speech(1.0)
    motions = []
    for engine in (from_file, in_memory):
        registered = engine.register(str(source))
        motions.append(engine.generate_motion(audio, registered))  # the same control.seed: the same noise
        registered.media.close()
    np.testing.assert_array_equal(motions[0], motions[1])  # the renderer is the same: so are the frames
    default = Engine.from_overrides(overrides)
    assert not torch.equal(
        default.networks.lmdm.module.final_layer.weight, from_file.networks.lmdm.module.final_layer.weight
    )
    for engine in (default, from_file, in_memory):
        engine.close()


def _nan_dataset(folder: Path) -> Path:
    make_dataset(folder, [smooth_clip("a", 100, 0), smooth_clip("b", 100, 1)])
    bad = dict(np.load(folder / "clips" / "b.npz"))
    bad["motion"][5, 3] = np.nan
    np.savez(folder / "clips" / "b.npz", **bad)
    return folder


def _other_width(folder: Path) -> Path:
    folder.mkdir()
    return save_lmdm(load_network("lmdm", None, tiny=True, cond_dim=1040), folder / "narrow.pth")


def _plain_state(folder: Path) -> Path:
    folder.mkdir()
    torch.save(load_network("lmdm", None, tiny=True).state_dict(), folder / "plain.pth")
    return folder / "plain.pth"


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (lambda d, t: t, (), "is not a prepared dataset"),
        (
            lambda d, t: (t / "manifest.json").write_text(
                '{"format": "ditto-prepared", "version": 9, "clips": []}'
            )
            and t,
            (),
            "format version 9",
        ),
        (lambda d, t: make_dataset(t / "empty", []), (), "holds no clips"),
        (
            lambda d, t: make_dataset(t / "short", [smooth_clip("a", 60, 0), smooth_clip("b", 70, 1)]),
            ("train.val_fraction=0",),
            "no clip is longer than 80 frames",
        ),
        (lambda d, t: _nan_dataset(t / "nan"), ("train.val_fraction=0",), "holds NaN or inf"),
        (lambda d, t: make_dataset(t / "one", [smooth_clip("a", 100, 0)]), (), "one video only"),
        (lambda d, t: d, ("trainer.devices=4",), "trainer.devices=4 but this machine has no GPU"),
        (lambda d, t: d, ("trainer.precision=bf16-mixed",), "needs a GPU here"),
    ],
)
def test_bad_input_is_one_line_before_training(dataset, tmp_path, setup, extra, message):
    data = setup(dataset, tmp_path)
    with pytest.raises(DittoError, match=message) as raised:
        run_training(config(Path(data), tmp_path / "out", "train.max_steps=2", *extra))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("make", "message"), [(_other_width, "condition width 1040"), (_plain_state, "model_state_dict")]
)
def test_an_init_checkpoint_that_does_not_fit_is_one_line(dataset, tmp_path, make, message):
    path = make(tmp_path / "ckpt")
    with pytest.raises(InputError, match=message):
        run_training(config(dataset, tmp_path / "out", "train.max_steps=2", f"train.init={path}"))


def test_resuming_with_other_settings_is_refused(dataset, tmp_path):
    run_training(config(dataset, tmp_path, "train.max_steps=2", "train.val_fraction=0"))
    with pytest.raises(InputError, match=r"other settings \(objective differ"):
        run_training(
            config(
                dataset,
                tmp_path,
                "train.max_steps=4",
                "train.val_fraction=0",
                "train.dropout=0.3",
                "resume=last",
            )
        )
    with pytest.raises(InputError, match="does not exist"):
        run_training(config(dataset, tmp_path / "elsewhere", "train.max_steps=4", "resume=last"))


def test_validation_is_logged_and_uses_held_out_videos_only(dataset, tmp_path):
    result = run_training(
        config(dataset, tmp_path, "train.max_steps=4", "train.val_every=2", "train.val_fraction=0.25")
    )
    rows = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("val/loss", "val/sample_exp", "val/jitter_ratio", "val/mouth_audio_corr_real"):
        assert np.isfinite(rows[-1][key]), key
    assert result.val_clips == 1 and result.train_clips == 3


def test_help_documents_every_train_key():
    from dataclasses import fields

    from ditto_research.train.config import TrainerOptions, TrainOptions

    result = subprocess.run(
        [sys.executable, "-m", "ditto_research.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for group, schema in (("train", TrainOptions), ("trainer", TrainerOptions)):
        for field in fields(schema):
            assert f"{group}.{field.name} [" in result.stdout, field.name


def test_a_frozen_condition_encoder_stays_as_it_was(dataset, tmp_path):
    from ditto_research.train.module import CONDITION_ENCODER

    result = run_training(
        config(
            dataset,
            tmp_path,
            "train.max_steps=3",
            "train.val_fraction=0",
            "train.freeze_condition_encoder=true",
            "train.ema_decay=null",
        )
    )
    start = load_network("lmdm", None, seed=5, tiny=True).state_dict()  # model=tiny's LMDM: seed 0 + 5
    trained = torch.load(result.lmdm_path)["model_state_dict"]
    frozen = [k for k in trained if k.startswith(CONDITION_ENCODER)]
    moved = [
        k for k in trained if not k.startswith(CONDITION_ENCODER) and not torch.equal(trained[k], start[k])
    ]
    assert frozen and all(torch.equal(trained[k], start[k]) for k in frozen)
    assert len(moved) > 10


def test_the_default_logger_is_wandb_offline_in_the_run_folder(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    register_train_configs()
    overrides = [o for o in FAST if o != "logger=csv"]
    cfg = to_config(
        compose("train", [*overrides, f"data={dataset}", f"output_dir={tmp_path}", "train.max_steps=2"]),
        TrainConfig,
    )
    assert cfg.logger is not None and cfg.logger.name == "wandb"
    run_training(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_accumulated_micro_batches_equal_one_large_batch(dataset, tmp_path):
    """train.accumulate=2 with batch 4 reads the samples (and draws) of batch 8 and averages the gradients
    of its two halves: the same steps up to the order of the sums."""
    common = ("train.max_steps=3", "train.val_fraction=0", "train.dropout=0", "train.ema_decay=null")
    one = run_training(config(dataset, tmp_path / "one", *common, "train.batch_size=8"))
    two = run_training(config(dataset, tmp_path / "two", *common, "train.batch_size=4", "train.accumulate=2"))
    a = torch.load(one.lmdm_path)["model_state_dict"]
    b = torch.load(two.lmdm_path)["model_state_dict"]
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a)
    assert worst < 1e-4, worst  # measured 1.1e-5 (Adam divides by the small second moments)
