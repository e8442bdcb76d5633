"""Loading ``config/dm/``: the brand, the templates and the journeys, every problem with
file:line (the ``Problem`` / ``ConfigError`` of the campaign loader).

    config/dm/brand.yaml              the sending identity and brand-wide rules
    config/dm/templates/*.yaml        one template each (engine.logic.dm.templates)
    config/dm/journeys/*.yaml         one journey each (engine.logic.dm.journeys)

No ``dm`` folder means distributed marketing is off: an empty :class:`DmConfig`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from engine.logic.common import Problem
from engine.logic.decisions.config import MAX_FILE_BYTES, ConfigError, FieldError, read_yaml
from engine.logic.decisions.rules import Path
from engine.logic.dm.journeys import Journey, parse_journey_doc
from engine.logic.dm.templates import Brand, TemplateVersion, parse_brand_doc, parse_template_doc

_BLOCK_SCALAR = re.compile(r":\s*[|>][-+0-9]*\s*(#.*)?$")


@dataclass(frozen=True, slots=True)
class DmConfig:
    brand: Brand | None = None
    templates: Mapping[str, TemplateVersion] = field(default_factory=dict)
    journeys: Mapping[str, Journey] = field(default_factory=dict)

    def template_versions(self) -> dict[str, str]:
        return {tid: t.version for tid, t in self.templates.items()}


def _line_for(lines: Mapping[Path, int], path: Path) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


def _error_line(err: FieldError, lines: Mapping[Path, int], text_lines: list[str]) -> int:
    line = _line_for(lines, err.path)
    inner = getattr(err, "template_line", None)
    if inner is None:
        return line
    # a Jinja source written as a block scalar starts on the line after its key
    key_line = text_lines[line - 1] if 0 < line <= len(text_lines) else ""
    return line + inner if _BLOCK_SCALAR.search(key_line) else line


def _read(file: FsPath, problems: list[Problem]) -> tuple[Any, dict[Path, int], list[str]] | None:
    name = str(file)
    try:
        raw = file.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            problems.append(Problem(name, 1, f"file is larger than {MAX_FILE_BYTES} bytes"))
            return None
        text = raw.decode("utf-8")
        doc, lines, dups = read_yaml(text)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(name, 1, f"cannot read: {exc}"))
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(Problem(name, line, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"))
        return None
    for path, line in dups:
        problems.append(Problem(name, line, f"duplicate key {path[-1]!r}"))
    if not isinstance(doc, Mapping):
        problems.append(Problem(name, 1, "must be a mapping"))
        return None
    return doc, lines, text.splitlines()


def _files(folder: FsPath) -> list[FsPath]:
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))


def load_dm(config_dir: str | FsPath) -> DmConfig:
    """Load and validate ``<config_dir>/dm``; raises ``ConfigError`` listing every problem."""
    root = FsPath(config_dir) / "dm"
    if not root.is_dir():
        return DmConfig()
    problems: list[Problem] = []
    brand: Brand | None = None
    brand_file = root / "brand.yaml"
    template_files = _files(root / "templates")
    journey_files = _files(root / "journeys")
    if brand_file.exists():
        got = _read(brand_file, problems)
        if got is not None:
            doc, lines, text_lines = got
            brand, errors = parse_brand_doc(doc)
            for err in errors:
                problems.append(Problem(str(brand_file), _error_line(err, lines, text_lines), str(err)))
    elif template_files or journey_files:
        problems.append(Problem(str(brand_file), 1, "is required: the brand's name and sending_domain"))

    templates: dict[str, TemplateVersion] = {}
    broken: set[str] = set()  # ids of templates that did not load (reported once, there)
    for file in template_files:
        got = _read(file, problems)
        if got is None:
            continue
        doc, lines, text_lines = got
        if brand is None:  # reported once, at brand.yaml
            if isinstance(doc.get("id"), str):
                broken.add(doc["id"])
            continue
        version, errors = parse_template_doc(doc, brand, str(file))
        for err in errors:
            problems.append(Problem(str(file), _error_line(err, lines, text_lines), str(err)))
        if version is None:
            if isinstance(doc.get("id"), str):
                broken.add(doc["id"])
            continue
        if version.id in templates:
            problems.append(Problem(str(file), _line_for(lines, ("id",)),
                                    f"id {version.id!r} is already used by {templates[version.id].source}"))
            continue
        templates[version.id] = version

    journeys: dict[str, Journey] = {}
    for file in journey_files:
        got = _read(file, problems)
        if got is None:
            continue
        doc, lines, text_lines = got

        def known(tid: str) -> bool:
            return tid in templates or tid in broken

        journey, errors = parse_journey_doc(doc, known, str(file))
        for err in errors:
            problems.append(Problem(str(file), _error_line(err, lines, text_lines), str(err)))
        if journey is None:
            continue
        if journey.id in journeys:
            problems.append(Problem(str(file), _line_for(lines, ("id",)),
                                    f"id {journey.id!r} is already used by {journeys[journey.id].source}"))
            continue
        journeys[journey.id] = journey
    if problems:
        raise ConfigError(problems)
    return DmConfig(brand, dict(sorted(templates.items())), dict(sorted(journeys.items())))
