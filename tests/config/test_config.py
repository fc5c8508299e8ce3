"""Every option of every group composes and validates; bad values fail before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from ditto_research.command_line import check_command_line
from ditto_research.config import (
    CONF_DIR,
    GROUP_SCHEMAS,
    SAMPLER_SCHEMAS,
    DDIMSamplerConfig,
    InferConfig,
    ODESamplerConfig,
    SamplerConfig,
    compose,
    to_config,
)
from ditto_research.constants import MOTION_DIM
from ditto_research.errors import ConfigError
from tests.helpers import write_landmark_file

OPTIONS = sorted((group, path.stem) for group in GROUP_SCHEMAS for path in (CONF_DIR / group).glob("*.yaml"))
PRESETS = sorted(path.stem for path in (CONF_DIR / "preset").glob("*.yaml"))


def config_error(overrides: list[str]) -> str:
    """The one-line ConfigError message that composing + validating ``overrides`` raises."""
    with pytest.raises(ConfigError) as info:
        to_config(compose("infer", overrides))
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups == set(GROUP_SCHEMAS)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_validates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if (group, option) == ("audio_encoder", "hubert_torch"):
        overrides.append(f"audio_encoder.path={tmp_path}")
    if (group, option) == ("audio_encoder", "precomputed"):
        np.save(tmp_path / "feats.npy", np.zeros((10, 1024), np.float32))
        overrides.append(f"audio_encoder.path={tmp_path / 'feats.npy'}")
    if (group, option) == ("face", "given"):
        overrides.append(f"face.landmarks={write_landmark_file(tmp_path / 'lmk.npz')}")
    cfg = to_config(compose("infer", overrides))
    assert isinstance(cfg, InferConfig)
    node = getattr(cfg, group)
    assert isinstance(node, GROUP_SCHEMAS[group])
    if hasattr(node, "name") and group != "control":
        assert node.name == option


def test_the_schema_and_the_modules_share_one_list_of_each_choice():
    """No copies: the schema (torch-free) and the modules re-export ditto_research.choices' own objects."""
    from ditto_research import choices
    from ditto_research.backends.base import BACKEND_NAMES as backends
    from ditto_research.backends.pytorch import LMDM_ORDERS
    from ditto_research.config import schema
    from ditto_research.diffusion.noise import NOISE_KINDS
    from ditto_research.face.factory import FRONTEND_NAMES as factory_names
    from ditto_research.face.frontend import FRONTEND_NAMES

    assert schema.BACKEND_NAMES is backends is choices.BACKEND_NAMES
    assert schema.LMDM_ORDERS is LMDM_ORDERS is choices.LMDM_ORDERS
    assert schema.NOISE_KINDS is NOISE_KINDS is choices.NOISE_KINDS
    assert schema.FACE_NAMES is FRONTEND_NAMES is factory_names is choices.FACE_NAMES
    for name in ("SAMPLER_NAMES", "PRECISIONS", "FADE_TYPES", "PASTE_MODES", "AUDIO_ENCODER_NAMES"):
        assert getattr(schema, name) is getattr(choices, name), name


def test_each_group_offers_the_options_of_its_choice_list():
    """conf/<group>/*.yaml are the choices the schema accepts (a new option is added in both places)."""
    from ditto_research import choices

    listed = {
        "model": choices.MODEL_NAMES,
        "backend": choices.BACKEND_NAMES,
        "mode": choices.MODE_NAMES,
        "sampler": choices.SAMPLER_NAMES,
        "face": choices.FACE_NAMES,
        "audio_encoder": choices.AUDIO_ENCODER_NAMES,
    }
    for group, names in listed.items():
        assert {path.stem for path in (CONF_DIR / group).glob("*.yaml")} == set(names), group


@pytest.mark.parametrize("option", sorted(path.stem for path in (CONF_DIR / "sampler").glob("*.yaml")))
def test_each_sampler_option_has_its_own_schema(option):
    assert f"/schema_sampler_{option}@_here_" in (CONF_DIR / "sampler" / f"{option}.yaml").read_text()
    cfg = to_config(compose("infer", [f"sampler={option}"]))
    assert type(cfg.sampler) is SAMPLER_SCHEMAS[option]
    assert OmegaConf.get_type(compose("infer", [f"sampler={option}"]).sampler) is SAMPLER_SCHEMAS[option]


def test_sampler_schemas_cover_every_sampler_and_only_ddim_takes_eta():
    from ditto_research.choices import SAMPLER_COMMON_OPTIONS, SAMPLER_NAMES, SAMPLER_OPTIONS
    from ditto_research.diffusion.samplers import SAMPLERS

    assert set(SAMPLER_SCHEMAS) == set(SAMPLERS)
    assert tuple(SAMPLER_SCHEMAS) == SAMPLER_NAMES
    for name, schema in SAMPLER_SCHEMAS.items():
        assert ("eta" in schema.option_names()) == SAMPLERS[name].takes_eta, name
        assert schema.option_names() == ("name", *SAMPLER_COMMON_OPTIONS, *SAMPLER_OPTIONS[name]), name
    assert DDIMSamplerConfig.option_names() == ("name", "steps", "guidance_scale", "eta")
    assert ODESamplerConfig.option_names() == ("name", "steps", "guidance_scale")
    assert to_config(compose("infer", ["sampler=heun"])).sampler.eta is None
    assert SamplerConfig(name="unipc", steps=3).eta is None  # the base stays usable from Python


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset):
    cfg = to_config(compose("infer", [f"+preset={preset}", "model=tiny"]))
    assert cfg.sampler.steps >= 1


def test_quality_preset_is_the_reference_setting():
    cfg = to_config(compose("infer", ["+preset=quality"]))
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.eta, cfg.sampler.guidance_scale) == (
        "ddim",
        50,
        1.0,
        2.0,
    )
    assert (cfg.motion.overlap_v2, cfg.motion.smo_k_d) == (10, 3)


def test_command_line_beats_preset():
    cfg = to_config(compose("infer", ["+preset=fast", "sampler.steps=7"]))
    assert cfg.sampler.steps == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["sampler.stepz=3"],
            "sampler.stepz is not a key of sampler=ddim; valid keys: name, steps, guidance_scale, eta",
        ),
        (
            ["sampler=dpmpp_2m", "sampler.eta=0.5"],
            "sampler.eta is not a key of sampler=dpmpp_2m; valid keys: name, steps, guidance_scale "
            "(eta is an option of sampler=ddim)",
        ),
        (
            ["sampler=euler", "+sampler.eta=0"],
            "sampler.eta is not a key of sampler=euler; valid keys: name, steps",
        ),
        (["control.emoo=3"], "control.emoo is not a key of control; valid keys: emo, eye_f0_mode"),
        (["+motion.smooth=3"], "motion.smooth is not a key of motion; valid keys: seq_frames"),
        (["sorce=a.png"], "sorce is not a key of the root config; valid keys: model, backend"),
        (
            ["sampler=plms"],
            "Could not find 'sampler/plms'; available options in 'sampler': ddim, dpmpp_2m, euler",
        ),
    ],
)
def test_unknown_keys_and_options_name_the_valid_ones(overrides, message):
    assert message in config_error(overrides)


def test_sampler_name_must_match_the_sampler_group_option():
    assert "choose the sampler with sampler=unipc" in config_error(["sampler=ddim", "sampler.name=unipc"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.steps=0", "sampler.steps"),
        ("sampler.steps=1001", "sampler.steps"),
        ("sampler.guidance_scale=-1", "guidance_scale"),
        ("sampler.eta=1.5", "sampler.eta=1.5 is out of range"),
        ("motion.overlap_v2=80", "overlap_v2"),
        ("motion.fix_kp_cond_dim=[0,300]", f"0 <= start < end <= {MOTION_DIM}"),
        ("control.fade_type=x", "fade_type"),
        ("control.fade_out_keys=[nose]", "nose"),
        ("control.fade_in=-2", "control.fade_in=-2 is out of range"),
        ("control.fade_out=-5", "control.fade_out=-5 is out of range"),
        ("control.delta_eye_open_n=-2", "control.delta_eye_open_n"),
        ("face.min_face_size=-1", "face.min_face_size"),
        ("backend.device=tpu", "cpu, cuda"),
        ("mode.chunksize=[3,0,2]", "chunksize"),
        ("model.name=huge", "ditto, untrained, tiny"),
    ],
)
def test_bad_values_are_config_errors(override, message):
    assert message in config_error([override])


def test_a_precision_the_backend_does_not_run_fails_at_validation():
    assert config_error(["backend=onnx", "backend.precision=bf16"]) == (
        "backend.precision='bf16' is not available with backend=onnx; choose one of: fp32, fp16"
    )
    assert to_config(compose("infer", ["backend=onnx", "backend.precision=fp16"])).backend.precision == "fp16"


def test_hubert_torch_needs_a_path():
    assert "audio_encoder.path" in config_error(["audio_encoder=hubert_torch"])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (None, "does not exist; give a (2, 265) [min; max] .npy file"),
        (np.zeros((3, MOTION_DIM)), "shape (3, 265); it must be (2, 265)"),
        (np.zeros((2, 63)), "shape (2, 63); it must be (2, 265)"),
        (np.full((2, MOTION_DIM), np.nan), "NaN or infinite"),
    ],
)
def test_clip_range_file_is_checked(tmp_path, array, message):
    path = tmp_path / "range.npy"
    if array is not None:
        np.save(path, array)
    error = config_error([f"motion.v_min_max_for_clip={path}"])
    assert f"motion.v_min_max_for_clip={path}" in error and message in error


def test_an_npz_archive_is_not_an_array_file(tmp_path):
    path = tmp_path / "range.npy"
    with path.open("wb") as f:  # an archive under a .npy name
        np.savez(f, v=np.zeros((2, MOTION_DIM)))
    assert f"motion.v_min_max_for_clip={path} is not a .npy array; give a (2, 265)" in config_error(
        [f"motion.v_min_max_for_clip={path}"]
    )
    assert f"control.emo file {path} is not a .npy array; give a label" in config_error(
        [f"control.emo={path}"]
    )


def test_good_clip_range_file_validates(tmp_path):
    path = tmp_path / "range.npy"
    np.save(path, np.stack([-np.ones(MOTION_DIM), np.ones(MOTION_DIM)]))
    assert to_config(
        compose("infer", [f"motion.v_min_max_for_clip={path}"])
    ).motion.v_min_max_for_clip == str(path)


def test_cond_dim_follows_flags():
    assert to_config(compose("infer", [])).motion.cond_dim == 1103
    cfg = to_config(compose("infer", ["motion.use_eye_open=false", "motion.use_sc=false"]))
    assert cfg.motion.cond_dim == 1024 + 8 + 6


def test_command_line_check_reports_hydra_errors_as_one_line():
    check_command_line("infer", ["model=tiny", "sampler=unipc", "--cfg", "job"])  # a good line passes
    with pytest.raises(ConfigError, match=r"valid keys: name, steps, guidance_scale \(eta is an option"):
        check_command_line("infer", ["model=tiny", "sampler=dpmpp_2m", "sampler.eta=0.5"])
    with pytest.raises(ConfigError, match="sampler.stepz is not a key"):
        check_command_line("infer", ["-c", "job", "sampler.stepz=3", "hydra.run.dir=/tmp/x"])
    # Sweeps and help are Hydra's to report.
    check_command_line("infer", ["-m", "sampler=ddim,unipc", "sampler.stepz=1"])
    check_command_line("infer", ["--help"])


@pytest.mark.parametrize(
    "value",
    [
        "my face é.png",
        "voix – 1.wav",
        "x (1).png",
        "a[b].png",
        "it's.png",
        'q"uote.png',
        "k=v.png",
        "a\\'b",
        "end\\",
    ],
)
def test_paths_as_people_have_them_are_quoted_for_hydra(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ditto_research.command_line import quote_override_values

    (quoted,) = quote_override_values([f"source={value}"])
    assert OverridesParser.create().parse_override(quoted).value() == value
    assert to_config(compose("infer", ["model=tiny", quoted])).source == value


def test_values_hydra_reads_are_left_alone_and_broken_structures_are_one_line():
    from ditto_research.command_line import quote_override_values

    kept = ["source=a b.png", "sampler.steps=5,10", "control.emo=[3,4]", "--cfg", "job", "+preset=fast"]
    assert quote_override_values(kept) == kept
    for bad in ("source=${nope", "control.emo=[3,4"):
        with pytest.raises(ConfigError, match="cannot read the override .* quote the value for Hydra"):
            quote_override_values([bad])


def test_run_folder_moves_when_the_current_folder_is_not_writable(tmp_path, monkeypatch, capsys):
    from ditto_research import command_line as config_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DITTO_CACHE_DIR", str(tmp_path / "cache"))
    assert config_module.ensure_writable_run_dir("infer", ["model=tiny"]) == ["model=tiny"]
    monkeypatch.setattr(config_module.os, "access", lambda *a, **k: False)
    moved = config_module.ensure_writable_run_dir("infer", ["model=tiny"])
    assert moved[0] == "model=tiny" and moved[1].startswith(
        f"hydra.run.dir='{tmp_path / 'cache'}/outputs/infer/"
    )
    assert "is not writable; run logs and results go to" in capsys.readouterr().err
    given = ["hydra.run.dir=/somewhere"]
    assert config_module.ensure_writable_run_dir("infer", given) == given
