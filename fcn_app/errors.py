"""Domain exceptions.

Library code raises these; only the CLI turns them into one-line messages and exit codes. Each message is
written for a person: it names the input and says how to fix the problem.
"""

from __future__ import annotations

__all__ = [
    "FcnError",
    "InputImageError",
    "WeightsError",
    "WeightsUnavailableError",
    "ConversionError",
    "ClassSelectionError",
    "OutputError",
    "ConfigError",
    "DatasetError",
    "TrainingError",
    "OptionError",
    "FontError",
    "RuntimeCompileError",
    "MissingExtraError",
]


class FcnError(Exception):
    """Base class of every error this package raises on purpose. ``exit_code`` is what the CLI exits with.

    ``option`` names, in the library's terms (a parameter or field name such as ``"max_side"``), the option whose
    value is wrong (:class:`OptionError`) or that fixes the problem; the CLI shows the matching flag.
    """

    exit_code = 2
    option: str | None = None

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        if option is not None:
            self.option = option


class InputImageError(FcnError):
    """An input image cannot be read: missing, not an image, truncated, too large, ..."""

    exit_code = 2


class OptionError(FcnError):
    """An option value is invalid. ``option`` names the option as the library knows it (a field or argument
    name such as ``"threshold"``); the message says what is wrong without naming any command-line flag — the CLI
    maps ``option`` to the flag the user typed."""

    exit_code = 2

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message, option=option)


class WeightsError(FcnError):
    """A weights file exists but is not a usable state dict for the chosen model."""

    exit_code = 2


class WeightsUnavailableError(WeightsError):
    """The default weights are neither cached nor downloadable (offline machine)."""

    exit_code = 2


class ConversionError(FcnError):
    """A classifier does not have the shape ``features → [adaptive pool] → Linear/ReLU/Dropout head``, or a network
    does not convert to another format; ``layer`` names the layer where that is known."""

    exit_code = 2

    def __init__(self, message: str = "", *, option: str | None = None, layer: str | None = None) -> None:
        super().__init__(message, option=option)
        self.layer = layer


class RuntimeCompileError(FcnError):
    """An inference runtime (OpenVINO, ONNX Runtime) cannot convert or compile a network; ``layer`` names the layer
    where that is known. The message ends by saying that the torch backend runs the network."""

    exit_code = 2

    def __init__(self, message: str, *, layer: str | None = None) -> None:
        super().__init__(f"{message}; the torch backend runs it", option="backend")
        self.layer = layer


class ClassSelectionError(FcnError):
    """A ``--class`` value names no class of the model."""

    exit_code = 2


class OutputError(FcnError):
    """An output cannot be written (unwritable folder, path is a file, disk full, ...)."""

    exit_code = 3


class ConfigError(FcnError):
    """A YAML config is invalid (unknown key, wrong type, unsafe tag)."""

    exit_code = 2


class DatasetError(FcnError):
    """A dataset on disk is malformed (missing mask, size mismatch, label out of range, ...)."""

    exit_code = 2


class TrainingError(FcnError):
    """Training cannot go on (loss became NaN/inf, checkpoint does not match, ...)."""

    exit_code = 1


class FontError(FcnError):
    """A font file for labels is missing or is not a TrueType/OpenType font."""

    exit_code = 2


class MissingExtraError(FcnError):
    """An optional dependency (an extra such as ``fcn-heatmap[cam]``) is not installed; the message says how."""

    exit_code = 2
