"""Every option of every group composes and validates; bad values fail before any model loads."""

from __future__ import annotations

import pytest

from ditto_research.config import CONF_DIR, GROUP_SCHEMAS, InferConfig, compose, to_config
from ditto_research.errors import ConfigError

OPTIONS = sorted(
    (group, path.stem) for group in GROUP_SCHEMAS for path in (CONF_DIR / group).glob("*.yaml")
)
PRESETS = sorted(path.stem for path in (CONF_DIR / "preset").glob("*.yaml"))


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups == set(GROUP_SCHEMAS)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("audio_encoder", "hubert_torch"):
        overrides.append("audio_encoder.path=/some/hubert-large")
    cfg = to_config(compose("infer", overrides))
    assert isinstance(cfg, InferConfig)
    node = getattr(cfg, group)
    if hasattr(node, "name") and group != "control":
        assert node.name == option


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset):
    cfg = to_config(compose("infer", [f"+preset={preset}", "model=tiny"]))
    assert cfg.sampler.steps >= 1


def test_quality_preset_is_the_reference_setting():
    cfg = to_config(compose("infer", ["+preset=quality"]))
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.eta, cfg.sampler.guidance_scale) == ("ddim", 50, 1.0, 2.0)
    assert (cfg.motion.overlap_v2, cfg.motion.smo_k_d) == (10, 3)


def test_command_line_beats_preset():
    cfg = to_config(compose("infer", ["+preset=fast", "sampler.steps=7"]))
    assert cfg.sampler.steps == 7


def test_typo_fails_at_compose_time():
    with pytest.raises(Exception, match="stepz"):
        compose("infer", ["sampler.stepz=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.steps=0", "sampler.steps"),
        ("sampler.steps=1001", "sampler.steps"),
        ("sampler.guidance_scale=-1", "guidance_scale"),
        ("motion.overlap_v2=80", "overlap_v2"),
        ("control.fade_type=x", "fade_type"),
        ("control.fade_out_keys=[nose]", "nose"),
        ("backend.device=tpu", "cpu, cuda"),
        ("mode.chunksize=[3,0,2]", "chunksize"),
        ("model.name=huge", "ditto, untrained, tiny"),
    ],
)
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        to_config(compose("infer", [override]))


def test_hubert_torch_needs_a_path():
    with pytest.raises(ConfigError, match="audio_encoder.path"):
        to_config(compose("infer", ["audio_encoder=hubert_torch"]))


def test_cond_dim_follows_flags():
    assert to_config(compose("infer", [])).motion.cond_dim == 1103
    cfg = to_config(compose("infer", ["motion.use_eye_open=false", "motion.use_sc=false"]))
    assert cfg.motion.cond_dim == 1024 + 8 + 6
