"""Validated run settings shared by the Python API and the CLI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geodet.errors import InputError


class DetectConfig(BaseModel):
    """Settings of one `geodet.detect` run; every field is checked on creation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenes: list[str] = Field(min_length=1)
    model: str
    out: str | None = None
    # None: the model's metadata, else the built-in default (see geodet.api.DEFAULTS).
    tile_size: int | None = Field(default=None, ge=16, le=16384)
    gsd: float | None = Field(default=None, gt=0, le=10000)
    overlap: float | None = Field(default=None, ge=0, lt=1)
    conf: float | None = Field(default=None, ge=0, le=1)
    iou: float | None = Field(default=None, gt=0, le=1)
    merge: Literal["ownership", "nms", "nmm"] = "ownership"
    ios: float = Field(default=0.5, gt=0, le=1)
    class_agnostic: bool = False
    batch_size: int = Field(default=8, ge=1, le=1024)
    workers: int | None = Field(default=None, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bands: tuple[int, ...] | None = Field(default=None, min_length=1)
    layout: str | None = None
    overwrite: bool = False
    out_crs: str | None = None
    resume: bool = False
    address: str | None = None
    progress: bool = True

    @classmethod
    def parse(cls, **values) -> DetectConfig:
        """Build a config, turning validation errors into a one-line `InputError`."""
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise InputError(f"invalid {where.replace('_', '-')}: {first['msg']} "
                             f"(got {first.get('input')!r})") from None
