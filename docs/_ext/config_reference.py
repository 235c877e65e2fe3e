"""Sphinx directives that document the configuration from the code itself.

``.. config-reference::`` walks :class:`dicom_sr.config.PipelineConfig` (and the models it
nests) and emits one table per TOML section: key, type and constraints, default, description.
``.. pipeline-table::`` loads every ``pipelines/*.toml`` and lists its version, config hash,
description and the keys it sets differently from the defaults. A pipeline that does not load
is a build warning (an error under ``-W``), so the documentation never shows a broken file.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pydantic import BaseModel
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: Words for the fields that carry no ``description`` in ``dicom_sr/config.py`` (a field's own
#: description always wins). Keys are dotted TOML keys.
FALLBACK: dict[str, str] = {
    "name": "pipeline name (defaults to the file name)",
    "version": "pipeline version, recorded in the provenance",
    "description": "one line shown by ``dicom-sr pipelines``",
    "engine.method": "cyclegan (the paper), zssr (G alone, L1), ibp (bicubic + back projection,"
    " no learning), bicubic",
    "engine.lr": "initial Adam learning rate of every optimiser",
    "engine.crop_size": "side of the random HR-father crops (rounded down to a multiple of the"
    " scale)",
    "engine.batch_size": "crops per training iteration",
    "engine.augment": "geometric augmentation of the crops: none, mirror (left-right only) or"
    " dihedral (the 8 rotations/reflections, as the paper)",
    "engine.kernel": "degradation kernel of the sons and of back projection: antialiased"
    " bicubic, or the Gaussian PSF below",
    "engine.gan_mode": "adversarial objective: log (-log D, the paper) or lsgan",
    "engine.back_projection_iters": "steps of the final back projection of every output",
    "engine.back_projection_pass_iters": "steps of back projection of each ensemble pass",
    "engine.back_projection_momentum": "heavy-ball momentum of back projection (0: plain)",
    "engine.tile_overlap": "LR pixels of context around each inference tile (discarded)",
    "engine.channels_last": "channels-last memory format at inference",
    "engine.cine_mode": "cines: shared (one model for the loop), finetune (warm start per"
    " frame), cold (train every frame)",
    "engine.cine_train_frames": "frames, spread over the loop, that train a cine's model",
    "engine.finetune_iterations": "iterations per frame in finetune mode",
    "engine.finetune_lr": "learning rate of the per-frame fine-tuning",
    "engine.seed": "random seed: same seed, same device, same output",
    "engine.device": "auto (CUDA when available), cpu or cuda; not part of the hash",
    "output.compress": "transfer syntax of the derived images: none, rle (lossless), jpeg,"
    " jpegls, j2k",
    "output.series_description_suffix": "appended to the source SeriesDescription ({scale} is"
    " replaced)",
    "output.series_number_offset": "derived SeriesNumber = source SeriesNumber + offset",
}

_SECTIONS = {"": "top level", "engine": "[engine]", "engine.losses": "[engine.losses]"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"``{_toml(a)}``" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or unset" if type(None) in args else "")
    if isinstance(annotation, type):
        return {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _constraints(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{sign} {value}")
    return ", ".join(words)


def _toml(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(section, (key, type, default, description)) for every leaf field, depth first."""
    section = prefix.rstrip(".")
    nested = []
    for name, field in model.model_fields.items():
        key = prefix + name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            nested.append((ann, key + "."))
            continue
        kind = _type_name(ann)
        limits = _constraints(field.metadata)
        if limits:
            kind += f", {limits}"
        text = field.description or FALLBACK.get(key, "")
        yield section, (key, kind, _toml(field.get_default(call_default_factory=True)), text)
    for sub, sub_prefix in nested:
        yield from _rows(sub, sub_prefix)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...], widths: str) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lead = "   * - " if i == 0 else "     - "
            lines.append(lead + (cell if cell else " "))
    return lines + [""]


def _literal(text: str) -> str:
    return f"``{text}``" if text.strip() else repr(text)


class ConfigReference(SphinxDirective):
    """Every key of :class:`~dicom_sr.config.PipelineConfig`, one table per TOML section."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from dicom_sr.config import PipelineConfig

        by_section: dict[str, list[tuple[str, ...]]] = {}
        for section, (key, kind, default, text) in _rows(PipelineConfig, ""):
            by_section.setdefault(section, []).append(
                (_literal(key), kind, _literal(default), text)
            )
        lines: list[str] = []
        for section, rows in by_section.items():
            title = _SECTIONS.get(section, f"[{section}]")
            lines += [f".. rubric:: {title}", ""]
            lines += _table(rows, ("key", "type", "default", "description"), "22 20 18 40")
        return self._parse(lines)

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]), 0, container)
        return container.children


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


class PipelineTable(ConfigReference):
    """The shipped ``pipelines/*.toml``: version, hash and what each changes."""

    def run(self) -> list[nodes.Node]:
        from dicom_sr.config import ConfigError, PipelineConfig, load_pipeline, pipelines_dir

        defaults = _flatten(PipelineConfig().model_dump(mode="json"))
        rows = []
        for path in sorted(pipelines_dir().glob("*.toml")):
            self.env.note_dependency(str(path))
            try:
                config = load_pipeline(path)
            except ConfigError as exc:
                logger.warning(
                    "pipeline %s does not load: %s", path.name, exc, location=self.get_location()
                )
                continue
            flat = _flatten(config.model_dump(mode="json"))
            changed = [
                f"``{k} = {_toml(v)}``"
                for k, v in flat.items()
                if k not in ("name", "version", "description") and defaults.get(k) != v
            ]
            rows.append(
                (
                    f"``{path.stem}``",
                    config.version,
                    f"``{config.hash()}``",
                    config.description or " ",
                    ", ".join(changed) or "(the defaults)",
                )
            )
        header = ("pipeline", "version", "config hash", "description", "differs from the defaults")
        return self._parse(_table(rows, header, "16 8 16 25 35"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("config-reference", ConfigReference)
    app.add_directive("pipeline-table", PipelineTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
