"""Write ``fcn_app/models/catalog.json``: every model ``--model`` can name, built once, as ``fcn-heatmap models``
lists it without building anything.

Each torchvision classifier (``torchvision.models.list_models(module=torchvision.models)``) and each timm model of
:data:`TIMM_MODELS` is built on the meta device and converted (:func:`fcn_app.catalog.describe_model`,
:func:`~fcn_app.catalog.describe_timm_model`): family, training input size, window, stride, the global-context
note, whether it ends in global pooling (``--window``, ``--method cam``), whether it converts exactly (else why
not), and its default weights — name, file, size as the registry states it, URL. Rerun after upgrading torchvision
or timm; ``tests/test_model_catalog.py`` says when the recorded file no longer matches the installed registry.

    PYTHONPATH=$PWD python scripts/make_model_catalog.py            # all of them (minutes on 2 cores)
    PYTHONPATH=$PWD python scripts/make_model_catalog.py --check    # recompute and compare, write nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version

from fcn_app.catalog import CATALOG_FILE, describe_model, describe_timm_model

#: timm models recorded: one or two per CNN family the conversion supports (``tests/test_timm_convert.py`` runs
#: efficientnet_b0, convnext_atto, mobilenetv3_small_050 and resnet18 for real), and the transformers it refuses,
#: so a user reads why before trying. Any other timm CNN may still work with ``--model timm:NAME``.
TIMM_MODELS = (
    "resnet18", "resnet50", "resnext50_32x4d", "seresnext50_32x4d", "wide_resnet50_2", "resnetv2_50",
    "convnext_atto", "convnext_tiny", "convnext_small", "convnextv2_tiny",
    "efficientnet_b0", "efficientnet_b3", "tf_efficientnetv2_s", "mobilenetv3_small_050", "mobilenetv3_large_100",
    "mobilenetv2_100", "regnety_008", "regnetx_016", "densenet121", "dla34", "inception_v3", "xception41",
    "ghostnet_100", "rexnet_100", "vgg16",
    "vit_small_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224",
)


def torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _progress(items, label: str):
    """The items, with one line per item on stderr (name, seconds): a run takes minutes."""
    for index, item in enumerate(items, 1):
        start = time.perf_counter()
        yield item
        print(f"{label} {index}/{len(items)} {item}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def build_catalog(timm_models: tuple[str, ...] = TIMM_MODELS) -> dict:
    """The catalog as written: the versions it was made with, then one record per model."""
    rows = [describe_model(name).to_dict() for name in _progress(torchvision_names(), "torchvision")]
    rows += [describe_timm_model(name).to_dict() for name in _progress(list(timm_models), "timm")]
    return {"made_by": "scripts/make_model_catalog.py",
            "versions": {package: version(package) for package in ("torch", "torchvision", "timm")},
            "models": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded file; write nothing")
    parser.add_argument("--out", default=str(CATALOG_FILE), help="where to write (default: the package's file)")
    args = parser.parse_args(argv)
    catalog = build_catalog()
    if args.check:
        recorded = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))["models"]
        differing = [row["name"] for row, old in zip(catalog["models"], recorded) if row != old]
        if len(recorded) != len(catalog["models"]) or differing:
            print(f"the recorded catalog differs: {', '.join(differing) or 'the number of models'}", file=sys.stderr)
            return 1
        print(f"the recorded catalog matches ({len(recorded)} models)")
        return 0
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(catalog, file, indent=1)
        file.write("\n")
    print(f"wrote {args.out}: {len(catalog['models'])} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
