"""Job files: a run's scenes, model, output and options in one YAML file.

The keys are ``scenes``, ``model``, ``out`` and the command's own option names
(``tile-size`` or ``tile_size``), checked by the same declaration as the command line
and the Python API (`geodet.Options`), so a job file accepts exactly what the command
accepts. Relative paths (scenes, lists, patterns, the model, the output) are relative
to the file's folder, so a job file and its data can move together. Anything given on
the command line overrides the file (`combine`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geodet.errors import InputError
from geodet.inputs import relative_to
from geodet.options import Options

INPUTS = ("scenes", "model", "out")


@dataclass(frozen=True)
class JobFile:
    """A loaded, checked job file."""

    path: Path
    scenes: tuple[str, ...] = ()
    model: str | None = None
    out: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # field name -> value


@dataclass(frozen=True)
class Request:
    """What to run: the job file under the command line; ``origins`` says where each
    option given came from (``command line`` or ``job file PATH``)."""

    scenes: tuple[str, ...]
    model: str
    out: str
    options: dict[str, Any]
    origins: dict[str, str]


def load(path: str | os.PathLike) -> JobFile:
    """Read and check a job file; anything wrong is one `InputError` line naming it."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the job file {path}: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where else ""
        raise InputError(f"job file {path} is not valid YAML{at}: fix its syntax") from None
    if not isinstance(content, dict):
        raise InputError(f"job file {path} must be a mapping of keys to values, such as "
                         "'model: cars.onnx'")
    values = {str(k).replace("-", "_"): v for k, v in content.items()}
    unknown = [k for k in values if k not in INPUTS and k not in Options.model_fields]
    if unknown:
        keys = ", ".join(n.replace("_", "-") for n in (*INPUTS, *Options.model_fields))
        raise InputError(f"job file {path}: unknown key {unknown[0].replace('_', '-')}: "
                         f"the keys are {keys}")
    options = {k: v for k, v in values.items() if k not in INPUTS}
    try:
        Options.parse(**options)
    except InputError as e:
        raise InputError(f"job file {path}: {e}") from None
    base = str(path.parent)
    scenes = values.get("scenes", [])
    scenes = [scenes] if isinstance(scenes, str) else scenes
    if not isinstance(scenes, list) or not all(isinstance(s, str) for s in scenes):
        raise InputError(f"job file {path}: scenes must be a path, URL or pattern, or a "
                         "list of them")
    for key in ("model", "out"):
        if not isinstance(values.get(key, ""), str):
            raise InputError(f"job file {path}: {key} must be a path")
    model, out = (relative_to(base, values[k]) if k in values else None
                  for k in ("model", "out"))
    return JobFile(path, tuple(relative_to(base, s) for s in scenes), model, out, options)


def combine(job: JobFile | None, scenes: list[str], model: str | None, out: str | None,
            flags: dict[str, Any]) -> Request:
    """The job file (if any) under the command line: scenes given on the command line
    replace the file's, and every flag given overrides the file's value."""
    job = job or JobFile(Path("."))
    scenes_, model_, out_ = tuple(scenes) or job.scenes, model or job.model, out or job.out
    missing = [what for what, v in (("SCENE", scenes_), ("--model", model_),
                                    ("--out", out_)) if not v]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: give them on the command line or "
                         "as scenes, model and out in a --config job file")
    origins = {**{k: f"job file {job.path}" for k in job.options},
               **{k: "command line" for k in flags}}
    return Request(scenes_, model_, out_, {**job.options, **flags}, origins)
