#!/usr/bin/env python
"""Fetch the Swagger UI and ReDoc files that `fcn-heatmap serve` ships for /docs and /redoc (offline API docs).

    python scripts/vendor_api_docs.py [--swagger-ui 5.36.0] [--redoc 2.5.4]

Runs `npm pack` for the pinned releases (swagger-ui-dist: Apache-2.0; redoc: MIT), copies the bundles with their
licence files into fcn_app/serve/static/vendor/, and prints each file's SHA-256 for NOTICE.md there (update the
versions and digests in that file by hand when the pins change). Needs npm and a route to the npm registry; the
tests and the server never do.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "fcn_app" / "serve" / "static" / "vendor"

#: (file inside the npm package, name under vendor/) for each package.
FILES = {
    "swagger-ui-dist": [("swagger-ui-bundle.js", "swagger-ui-bundle.js"),
                        ("swagger-ui-bundle.js.LICENSE.txt", "swagger-ui-bundle.js.LICENSE.txt"),
                        ("swagger-ui.css", "swagger-ui.css"),
                        ("favicon-32x32.png", "swagger-ui-favicon-32x32.png"),
                        ("LICENSE", "LICENSE-swagger-ui"), ("NOTICE", "NOTICE-swagger-ui")],
    "redoc": [("bundles/redoc.standalone.js", "redoc.standalone.js"),
              ("bundles/redoc.standalone.js.LICENSE.txt", "redoc.standalone.js.LICENSE.txt"),
              ("LICENSE", "LICENSE-redoc")],
}


def unpack(package: str, version: str, work: Path) -> Path:
    """``npm pack package@version`` into ``work``; the unpacked package folder."""
    name = subprocess.run(["npm", "pack", f"{package}@{version}"], cwd=work, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    target = work / package
    with tarfile.open(work / name) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swagger-ui", default="5.36.0")
    parser.add_argument("--redoc", default="2.5.4")
    args = parser.parse_args()
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for package, version in (("swagger-ui-dist", args.swagger_ui), ("redoc", args.redoc)):
            unpacked = unpack(package, version, Path(work))
            for inside, name in FILES[package]:
                shutil.copyfile(unpacked / inside, VENDOR / name)
                digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
                print(f"{package}@{version}  {name}  sha256 {digest}")


if __name__ == "__main__":
    main()
