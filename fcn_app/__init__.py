"""fcn-heatmap: an ImageNet classifier as a fully convolutional network that shows where things are.

The Python API in a few lines::

    import fcn_app
    network = fcn_app.load_fcn("vgg16")                      # or fcn_app.to_fully_convolutional(my_model, input_size=32)
    image = fcn_app.load_image("examples/chelsea.jpg")       # H×W×3 uint8 RGB
    score_map = fcn_app.compute_score_map(network, image)    # K×rows×cols logits + geometry
    cat = fcn_app.heatmap_for_class(score_map, fcn_app.resolve_classes(["cat"], network.categories)[0])
    picture = fcn_app.overlay(image, cat.heatmap)            # RGB uint8, same size as the image
"""

import importlib

from .errors import (
    ClassSelectionError,
    ConversionError,
    FcnError,
    InputImageError,
    OptionError,
    OutputError,
    WeightsError,
    WeightsUnavailableError,
)

#: Where each public name lives. They are imported on first use (PEP 562), so ``import fcn_app`` — and the
#: command line's start-up, which decodes the photo while torch loads (:mod:`fcn_app.startup`) — does not
#: import torch until something needs it.
_EXPORTS = {
    **dict.fromkeys(["ScoreGeometry", "network_geometry", "upsample_to_pixels"], "geometry"),
    **dict.fromkeys(["ClassSelection", "resolve_classes"], "classes"),
    **dict.fromkeys(["ClassHeatmap", "class_heatmaps", "heatmap_for_class", "top_classes"], "heatmaps"),
    "load_image": "io",
    **dict.fromkeys(["FullyConvolutionalNet", "load_classifier", "load_fcn", "load_network", "to_fully_convolutional"],
                    "models"),
    **dict.fromkeys(["colorize", "overlay", "tile_panels"], "render"),
    **dict.fromkeys(["ScoreMap", "ScoringOptions", "compute_score_map", "compute_score_maps", "load_scoring_network"],
                    "scoring"),
    "load_segmentation_model": "segmentation.checkpoint",
    **dict.fromkeys(["DetectionTask", "HeatmapOptions", "HeatmapTask", "SegmentationTask", "process_image"], "tasks"),
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "ClassHeatmap",
    "ClassSelection",
    "ClassSelectionError",
    "ConversionError",
    "DetectionTask",
    "FcnError",
    "FullyConvolutionalNet",
    "HeatmapOptions",
    "HeatmapTask",
    "InputImageError",
    "OptionError",
    "OutputError",
    "ScoreGeometry",
    "ScoreMap",
    "ScoringOptions",
    "SegmentationTask",
    "WeightsError",
    "WeightsUnavailableError",
    "class_heatmaps",
    "colorize",
    "compute_score_map",
    "compute_score_maps",
    "heatmap_for_class",
    "load_classifier",
    "load_fcn",
    "load_image",
    "load_network",
    "load_segmentation_model",
    "load_scoring_network",
    "network_geometry",
    "overlay",
    "process_image",
    "resolve_classes",
    "tile_panels",
    "to_fully_convolutional",
    "top_classes",
    "upsample_to_pixels",
]
