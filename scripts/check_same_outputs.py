"""Are the outputs on ``examples/`` the same bytes from two checkouts? The check a refactor must pass.

Each checkout runs, as a user would (fresh processes, ``python -m fcn_app``, seeded random VGG16 and LR-ASPP
weights in a temporary ``TORCH_HOME``, torch fp32 pinned as the test suite pins it), on the photos of *this*
checkout's ``examples/``:

- ``fcn-heatmap chelsea.jpg --grid --json --save-scores`` (heatmap, grid, JSON, npz);
- ``fcn-heatmap detect chelsea.jpg`` (detections picture and JSON);
- ``fcn-heatmap coffee.jpg --checkpoint torchvision:lraspp_mobilenet_v3_large --json`` (segmentation);
- ``fcn-heatmap examples/ --json`` (a folder: every output, ``summary.json``, the gallery ``index.html``);
- ``fcn-heatmap serve``, then ``POST /api/heatmap`` and ``POST /api/detect`` with chelsea.jpg (the API's JSON).

Every file is compared byte for byte. Run-time facts (seconds, images/s, dates, the output folder's own path) are
not outputs: in JSON files and the folder summary, keys naming them are dropped before a second comparison, and
the report says which files were equal only after that. Exit code 1 if any file differs (or exists in one only).

    git worktree add /tmp/before <commit>
    python scripts/check_same_outputs.py --before /tmp/before            # the other side: this checkout
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: JSON keys whose values are facts of the run, not of the outputs.
VOLATILE = re.compile(r"(seconds|elapsed|images_per_s|per_second|started|finished|date|time$|duration|^out$|"
                      r"output_dir|^outputs?$|^root$|^path$|^source$|^input$|^image$)", re.IGNORECASE)


def cpu_description() -> str:
    from fcn_app.device import cpu_flags, cpu_model

    return f"{cpu_model()} ({' '.join(sorted(f for f in cpu_flags() if f.startswith(('avx', 'amx'))))})"


def prepare_torch_home(home: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_default_weights  # noqa: E402 — the test suite's seeded weights, same files
    from test_torchvision_segmentation import write_segmentation_weights  # noqa: E402

    write_default_weights(home, "vgg16", seed=0)
    write_segmentation_weights(home, "lraspp_mobilenet_v3_large", seed=0)


def environment(tree: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), TORCH_HOME=str(home), FCN_HEATMAP_OFFLINE="1",
               FCN_HEATMAP_BACKEND="torch", FCN_HEATMAP_PRECISION="fp32", COLUMNS="200")
    env.pop("FCN_HEATMAP_WEIGHTS", None)
    return env


def run(tree: Path, env: dict, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fcn_app", *args], cwd=tree, env=env, capture_output=True,
                            text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: fcn-heatmap {' '.join(args)} exited {result.returncode}:\n{result.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_image(url: str, image: Path) -> bytes:
    boundary = "fcnheatmapboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read()


def api_answers(tree: Path, env: dict, out: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fcn_app", "serve", "--port", str(port), "--device", "cpu"],
                              cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{tree}: fcn-heatmap serve did not start:\n{server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        out.mkdir(parents=True)
        for route in ("heatmap", "detect"):
            (out / f"api_{route}.json").write_bytes(post_image(f"http://127.0.0.1:{port}/api/{route}",
                                                               ROOT / "examples" / "chelsea.jpg"))
    finally:
        server.terminate()
        server.wait(timeout=30)


def produce(tree: Path, home: Path, out: Path) -> None:
    env = environment(tree, home)
    examples = ROOT / "examples"
    run(tree, env, str(examples / "chelsea.jpg"), "--out", str(out / "heatmap"), "--grid", "--json", "--save-scores")
    run(tree, env, "detect", str(examples / "chelsea.jpg"), "--out", str(out / "detect"))
    run(tree, env, str(examples / "coffee.jpg"), "--checkpoint", "torchvision:lraspp_mobilenet_v3_large", "--out",
        str(out / "segmentation"), "--json")
    folder = out / "folder-input"
    shutil.copytree(examples, folder, ignore=shutil.ignore_patterns("*.md"))
    run(tree, env, str(folder), "--out", str(out / "folder"), "--json")
    api_answers(tree, env, out / "api")


def without_run_facts(value, root: str):
    if isinstance(value, dict):
        return {key: without_run_facts(item, root) for key, item in value.items() if not VOLATILE.search(key)}
    if isinstance(value, list):
        return [without_run_facts(item, root) for item in value]
    if isinstance(value, str):
        return value.replace(root, "<out>")
    return value


def compare(before: Path, after: Path) -> int:
    names = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(after) for p in after.rglob("*") if p.is_file()})
    same = 0
    differ, facts_only = [], []
    for name in names:
        a, b = before / name, after / name
        if not a.is_file() or not b.is_file():
            differ.append(f"{name}: only in {'after' if b.is_file() else 'before'}")
        elif a.read_bytes() == b.read_bytes():
            same += 1
        elif name.suffix in (".json", ".html") and _equal_without_run_facts(a, b, before, after):
            facts_only.append(str(name))
        else:
            differ.append(f"{name}: bytes differ")
    print(f"{len(names)} files: {same} byte-identical, {len(facts_only)} equal once run-time facts are dropped "
          f"({', '.join(facts_only) or 'none'}), {len(differ)} differ")
    for line in differ:
        print("  " + line)
    return 1 if differ else 0


def _equal_without_run_facts(a: Path, b: Path, before: Path, after: Path) -> bool:
    if a.suffix == ".json":
        return (without_run_facts(json.loads(a.read_text()), str(before))
                == without_run_facts(json.loads(b.read_text()), str(after)))
    # the gallery page embeds the summary: compare it with the run-time numbers and folder names blanked
    blank = re.compile(r'"(?:seconds|elapsed[^"]*|images_per_s|started|finished)"\s*:\s*[^,}]+')
    return (blank.sub("", a.read_text().replace(str(before), "<out>"))
            == blank.sub("", b.read_text().replace(str(after), "<out>")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    parser.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    work = Path(tempfile.mkdtemp(prefix="fcn-same-outputs-")) if args.keep is None else args.keep
    home = work / "torch_home"
    prepare_torch_home(home)
    for side, tree in (("before", args.before), ("after", args.after)):
        started = time.perf_counter()
        produce(tree.resolve(), home, work / side)
        print(f"{side}: {tree} ({time.perf_counter() - started:.0f} s)")
    code = compare(work / "before", work / "after")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
