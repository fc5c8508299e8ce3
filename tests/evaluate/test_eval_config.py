"""conf/evaluate.yaml: every logger, sweep and launcher option composes; sweeps name options that exist."""

from __future__ import annotations

import importlib.util
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from ditto_research.config import CONF_DIR, GROUP_SCHEMAS, PipelineConfig, to_config
from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import EvaluateConfig, register_evaluate_configs

LOGGERS = sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml") if p.stem != "none")
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
LAUNCHERS = {
    "joblib_local": "hydra_plugins.hydra_joblib_launcher",
    "submitit_slurm_gpu": "hydra_plugins.hydra_submitit_launcher",
}


def evaluate_cfg(overrides: list[str], hydra: bool = False):
    register_evaluate_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides, return_hydra_config=hydra)


def test_defaults_validate_and_reuse_the_infer_groups():
    cfg = to_config(evaluate_cfg(["model=tiny"]), EvaluateConfig)
    assert cfg.dataset == "builtin" and cfg.metrics == ["motion", "sync_proxy", "syncnet", "quality"]
    assert cfg.verbose is False
    assert isinstance(cfg, PipelineConfig)  # the engine is built from it as it is: no conversion
    assert cfg.model.name == "tiny" and cfg.progress is False


def test_default_logger_is_wandb_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = to_config(evaluate_cfg([]), EvaluateConfig)
    assert cfg.logger is not None and cfg.logger.name == "wandb" and cfg.logger.wandb_mode == "offline"
    assert cfg.logger.dir is None  # the run folder


def test_wandb_mode_key_then_environment(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert to_config(evaluate_cfg([]), EvaluateConfig).logger.wandb_mode == "online"
    chosen = to_config(evaluate_cfg(["logger.mode=disabled"]), EvaluateConfig)
    assert chosen.logger.wandb_mode == "disabled"


@pytest.mark.parametrize("override", ["logger=none", "~logger"])
def test_no_logger(override):
    assert to_config(evaluate_cfg([override]), EvaluateConfig).logger is None


@pytest.mark.parametrize("logger", LOGGERS)
def test_every_logger_composes(logger):
    cfg = to_config(evaluate_cfg([f"logger={logger}"]), EvaluateConfig)
    assert cfg.logger is not None and cfg.logger.name == logger and cfg.logger.mode is None


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_sets_params_over_existing_options(sweep):
    cfg = evaluate_cfg([f"sweep={sweep}"], hydra=True)
    params = cfg.hydra.sweeper.params
    assert params, f"sweep {sweep} sets no hydra.sweeper.params"
    parser = OverridesParser.create()
    for key, values in params.items():
        override = parser.parse_override(f"{key}={values}")
        choices = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        assert len(choices) >= 1
        if key in GROUP_SCHEMAS:  # a group: every value must be an option file
            missing = [c for c in choices if not (CONF_DIR / key / f"{c}.yaml").is_file()]
            assert not missing, f"sweep {sweep}: {key} options {missing} do not exist in conf/{key}/"
        for choice in choices:  # each combination's value composes and validates on its own
            value = f"[{','.join(map(str, choice))}]" if isinstance(choice, list) else choice
            to_config(evaluate_cfg([f"sweep={sweep}", f"{key}={value}"]), EvaluateConfig)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_configs_compose_when_the_plugin_is_installed(launcher):
    try:
        found = importlib.util.find_spec(LAUNCHERS[launcher]) is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        found = False
    if not found:
        pytest.skip(f"{LAUNCHERS[launcher]} not installed (optional: pip install hydra-*-launcher)")
    cfg = evaluate_cfg([f"hydra/launcher={launcher}"], hydra=True)
    assert "Launcher" in cfg.hydra.launcher._target_


def test_typo_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="metricz"):
        evaluate_cfg(["metricz=[motion]"])
    with pytest.raises(ConfigCompositionException, match="projekt"):
        evaluate_cfg(["logger=wandb", "logger.projekt=x"])


# Every place that tells users how to run a ready-made sweep: the sweep files' own headers, the app's config
# and --help, the docs, the README. The group sits in the root defaults (as null), so only `sweep=NAME`
# composes.
ROOT = CONF_DIR.parents[1]
DOC_FILES = [
    *sorted((CONF_DIR / "sweep").glob("*.yaml")),
    CONF_DIR / "evaluate.yaml",
    ROOT / "docs" / "evaluation.md",
    ROOT / "README.md",
]
SWEEP_COMMAND = re.compile(
    r"ditto_research\.evaluate\.run -m\s(?:.*\s)?(?P<key>\+?sweep)=(?P<name>[a-z0-9_]+)"
)


def _documented_sweep_commands() -> list[tuple[str, str, str]]:
    """(file name, override key as written, sweep name) of every documented ``-m ... sweep=NAME`` command."""
    found = []
    for path in DOC_FILES:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                match = SWEEP_COMMAND.search(line)
                if match:
                    found.append((path.name, match["key"], match["name"]))
    return found


def test_every_sweep_is_documented_with_the_working_syntax():
    commands = _documented_sweep_commands()
    wrong = [(f, f"{k}={n}") for f, k, n in commands if k != "sweep"]
    assert not wrong, f"`+sweep=` fails ('Multiple values for sweep'); write `-m sweep=NAME` in {wrong}"
    unknown = [(f, n) for f, _, n in commands if n not in SWEEPS]
    assert not unknown, f"documented sweeps that are not in conf/sweep/: {unknown}"
    assert {n for f, _, n in commands if f == f"{n}.yaml"} == set(SWEEPS), "each sweep file shows its command"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_documented_sweep_syntax_composes(sweep):
    cfg = evaluate_cfg([f"sweep={sweep}"], hydra=True)
    assert cfg.hydra.sweeper.params
    with pytest.raises(ConfigCompositionException, match="Multiple values for sweep"):
        evaluate_cfg([f"+sweep={sweep}"], hydra=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("metrics=[motion,lse]", "motion, sync_proxy, syncnet"),
        ("executor=ray", "local, lightning"),
        ("max_clips=0", "max_clips"),
        ("max_seconds=0", "max_seconds"),
        ("sync_max_offset=-1", "sync_max_offset"),
    ],
)
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        to_config(evaluate_cfg([override]), EvaluateConfig)


def test_bad_logger_mode():
    with pytest.raises(ConfigError, match="offline, online, disabled"):
        to_config(evaluate_cfg(["logger=wandb", "logger.mode=cloud"]), EvaluateConfig)
