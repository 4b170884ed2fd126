"""What the command line answers before anything heavy loads (issue 25): ``--help`` and usage errors without
importing torch, the help's install hints as typed, mistakes that need no model found before the model loads,
and what a user needs to fix a path or a layer name. Real subprocesses: the import state of a fresh process is
what is claimed. Timings are printed by ``scripts/bench_startup.py``, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from helpers_cli import cli_environment, run_fcn

#: Runs ``fcn_app.cli.main`` on each argument list of ``sys.argv[1]`` (JSON) in this one process and prints, last,
#: the exit code, stdout and stderr of each and which heavy modules were imported by then.
_IN_ONE_PROCESS = """\
import contextlib, io, json, sys
from fcn_app.cli import _commands, main
argvs = json.loads(sys.argv[1])
argvs += [[name, "--help"] for name in sorted(_commands())] if sys.argv[2] == "with-help" else []
runs = []
for argv in argvs:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(argv)
            code = 0
        except SystemExit as stop:
            code = stop.code
    runs.append({"argv": argv, "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
heavy = sorted(name for name in ("torch", "torchvision", "cv2", "fastapi") if name in sys.modules)
print(json.dumps({"runs": runs, "heavy": heavy}))
"""


def run_in_one_process(argvs: list[list[str]], cwd, *, every_help: bool = False, env: dict | None = None) -> dict:
    """``fcn-heatmap ARGV`` for each of ``argvs`` (and each command's ``--help`` with ``every_help``) in one fresh
    process: ``{"runs": [{argv, code, stdout, stderr}, …], "heavy": [heavy modules imported]}``."""
    result = subprocess.run([sys.executable, "-c", _IN_ONE_PROCESS, json.dumps(argvs),
                             "with-help" if every_help else "-"], capture_output=True, text=True,
                            env=cli_environment(env), cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def one_line(run: dict) -> str:
    """The one error line of a run (the contract of helpers_cli.assert_one_line_error)."""
    lines = run["stderr"].splitlines()
    assert run["stdout"] == "" and len(lines) == 1 and "Traceback" not in run["stderr"], run
    return lines[0]


def test_help_and_usage_errors_do_not_import_torch(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 30)).save(photo)
    usage = [
        [str(photo), "--no-such-option"],  # unknown option
        ["evaluate"],  # missing argument
        ["import-weights", "x.pth"],  # missing option
        [str(photo), "--alpha", "2"],  # out of range
        [str(photo), "--topk", "many"],  # not a number
        [str(photo), "--format", "bmp"],  # bad choices, checked before the model loads
        [str(photo), "--method", "foo"],
        [str(photo), "--colormap", "rainbow"],
        [str(photo), "--normalize", "rainbow"],
        [str(photo), "--backend", "tpu"],
        ["detect", str(photo), "--precision", "fp8"],
        ["detect", str(photo), "--work-size", "big"],
        ["no-such-photo.jpg"],  # a missing input
        [str(photo), "--class", "dgo"],  # a mistyped class of the default model (ImageNet's names)
        ["detect", str(photo), "--class", "dgo"],
    ]
    answered = run_in_one_process([["--help"], *usage], tmp_path, every_help=True)
    assert answered["heavy"] == []
    helps, mistakes = [answered["runs"][0], *answered["runs"][1 + len(usage):]], answered["runs"][1:1 + len(usage)]
    assert len(helps) > 8 and all(run["code"] == 0 and "Usage" in run["stdout"] for run in helps), helps
    for run in mistakes:
        assert run["code"] == 2, run
        one_line(run)
    assert "no class named 'dgo'" in one_line(mistakes[-2]) and "no class named 'dgo'" in one_line(mistakes[-1])


def test_console_script_entry_does_not_import_torch_for_help(tmp_path):
    """``python -m fcn_app --help`` through the start-up (``fcn_app.__main__``), as the console script runs it."""
    program = ("import atexit, sys\n"
               "atexit.register(lambda: sys.stderr.write('torch imported: %s' % ('torch' in sys.modules)))\n"
               "sys.argv = ['fcn-heatmap', '--help']\n"
               "from fcn_app.__main__ import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=cli_environment(),
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr
    assert result.stderr.endswith("torch imported: False"), result.stderr


def test_install_hints_in_help_keep_their_extras(tmp_path):
    """Rich markup took ``[cam]`` and ``[openvino]`` for tags: the help read ``pip install 'fcn-heatmap'``."""
    answered = run_in_one_process([["heatmap", "--help"], ["detect", "--help"]], tmp_path, env={"COLUMNS": "400"})
    for run in answered["runs"]:
        assert run["code"] == 0, run
        assert "pip install 'fcn-heatmap[cam]'" in run["stdout"], run["stdout"]
        assert "pip install 'fcn-heatmap[openvino]'" in run["stdout"], run["stdout"]
        assert "'fcn-heatmap')" not in run["stdout"]


def test_a_missing_folder_is_called_a_folder(tmp_path):
    missing = tmp_path / "holiday" / "photos"
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"never read: the dataset folder is checked first")
    answered = run_in_one_process([
        [f"{missing}{os.sep}", "--out", str(tmp_path / "out")],
        [str(missing), "--out", str(tmp_path)],
        ["detect", str(tmp_path / "photos")],
        [str(tmp_path / "photo.jpg")],
        ["evaluate", str(checkpoint), str(tmp_path / "VOC2012")],
    ], tmp_path)
    assert answered["heavy"] == []
    *folders, photo, dataset = [one_line(run) for run in answered["runs"]]
    assert [run["code"] for run in answered["runs"]] == [2] * 5
    for line in folders:
        assert "no such folder" in line and "no such file" not in line, line
    assert f"{missing}: no such folder ({missing.parent} does not exist either)" in folders[0]
    assert "photo.jpg: no such file" in photo
    assert "VOC2012" in dataset and "does not exist" in dataset, dataset


@pytest.mark.slow
def test_target_layer_list_prints_the_layers_a_saliency_method_can_read(tmp_path):
    result = run_fcn("--model", "helpers_batch:tiny_fcn", "--target-layer", "list", timeout=300)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert names[0] == "features" and len(names) > 3, result.stdout
    assert all(name.startswith("features.") for name in names[1:]), result.stdout
    detect = run_fcn("detect", "--model", "helpers_batch:tiny_fcn", "--target-layer", "list", timeout=300)
    assert detect.returncode == 0 and detect.stdout == result.stdout, detect.stderr
