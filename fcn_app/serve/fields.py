"""The POST routes' form fields, declared once: each alias is ``Annotated[type, Form(...)]`` (or ``File``), so a
field that several routes take has one name, one check and one description in ``/docs``. Defaults stay with
each route (``topk`` is 3 for heatmaps, 5 for detections)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import File, Form, UploadFile

from ..choices import NORMALIZE_MODES
from ..methods import METHODS

__all__ = ["ClassField", "FlagField", "FractionField", "ImageField", "MaxPixelsField", "MaxSideField", "MethodField",
           "NormalizeField", "NumberField", "PathField", "TargetLayerField", "TextField", "TopkField", "WorkSizeField",
           "format_field", "normalize_mode"]

ImageField = Annotated[UploadFile | None, File(description="The image (jpg, png, bmp, webp, tif, gif).")]
PathField = Annotated[str | None, Form(description="Instead of an upload: an image path relative to --root.")]
ClassField = Annotated[list[str] | None, Form(alias="class", description="Class name, word or index (repeatable); "
                                               "the CLI's --class rules.")]
MaxSideField = Annotated[int | None, Form(ge=1, description="Downscale so the longer side is at most this.")]
MaxPixelsField = Annotated[int | None, Form(ge=1, description="Refuse images declaring more pixels (at most the "
                                                              "server's limit, which is the default).")]
WorkSizeField = Annotated[str | None, Form(description="Longer side (px) of the image the network sees, or native "
                                                    "(the CLI's --work-size); results refer to the image's own pixels.")]
MethodField = Annotated[str | None, Form(description=f"How the map is made: {', '.join(METHODS)} (the CLI's --method; "
                                                     "default: the server's --method). /api/info lists those this "
                                                     "server can run.")]
TargetLayerField = Annotated[str | None, Form(description="The layer a pytorch-grad-cam method reads (the CLI's "
                                                          "--target-layer).")]
NormalizeField = Annotated[str, Form(description=f"How each class's map becomes colours: {', '.join(NORMALIZE_MODES)} "
                                                 "(the CLI's --normalize). true/false, what the former on/off field "
                                                 "sent, read as peak/none.")]
TopkField = Annotated[int, Form(ge=1)]
#: A value between 0 and 1: alpha, threshold, min_score, nms_iou.
FractionField = Annotated[float, Form(ge=0.0, le=1.0)]
#: Fields with no check of their own here: the task's options check them (a bad value is a 422 with one line).
TextField = Annotated[str, Form()]
FlagField = Annotated[bool, Form()]
NumberField = Annotated[float, Form()]


def format_field(description: str | None = None) -> Any:
    """The ``format`` field (the library's ``image_format``: ``format`` is a Python builtin), described per route:
    what the picture is differs between heatmaps, segmentation and detections."""
    return Annotated[str, Form(alias="format", description=description)]


#: The former on/off field's values (every spelling FastAPI read as a bool) → the mode it meant.
_NORMALIZE_SWITCH = {**dict.fromkeys(("true", "t", "on", "yes", "y", "1"), "peak"),
                     **dict.fromkeys(("false", "f", "off", "no", "n", "0"), "none")}


def normalize_mode(value: str) -> str:
    """The ``normalize`` field as :class:`~fcn_app.tasks.HeatmapOptions` takes it (it checks the mode: an unknown
    one is a 422 with one line)."""
    return _NORMALIZE_SWITCH.get(value.strip().lower(), value)
