"""Tiny-model ONNX exports shared by the export and backend tests (written once per session, per option
set)."""

from __future__ import annotations

from pathlib import Path

from ditto_research.config import to_config
from ditto_research.export.config import ExportConfig, register_export_configs


def export_config(output_dir: Path, overrides: list[str] | None = None) -> ExportConfig:
    """Compose conf/export.yaml with model=tiny and ``overrides`` (the CLI path, minus Hydra's run dir)."""
    from hydra import compose, initialize_config_dir

    from ditto_research.config import CONF_DIR

    register_export_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="export", overrides=["model=tiny", f"output_dir={output_dir}", *(overrides or [])]
        )
    return to_config(cfg, ExportConfig)


def tiny_export(base: Path, networks: list[str], overrides: list[str] | None = None) -> Path:
    """Export ``networks`` (verified) into a folder keyed by ``overrides``; reuses files already written."""
    from ditto_research.backends import get_io
    from ditto_research.export.onnx import run_export

    key = "_".join(o.replace("=", "-") for o in sorted(overrides or [])) or "default"
    folder = base / f"tiny_onnx_{key}"
    missing = [n for n in networks if not (folder / get_io(n).onnx_file).is_file()]
    if missing:
        run_export(
            # the folder is this cache's own: an earlier call's files (another form) may be replaced
            export_config(folder, [f"networks=[{','.join(missing)}]", *(overrides or []), "overwrite=true"]),
            log=lambda _: None,
        )
    return folder
