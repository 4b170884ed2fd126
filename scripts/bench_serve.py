#!/usr/bin/env python
"""Throughput of ``fcn-heatmap serve`` next to the model alone, measured side by side in one run.

    PYTHONPATH=. python scripts/bench_serve.py --model resnet18 --random-weights --seconds 12 --threads 1
    PYTHONPATH=. python scripts/bench_serve.py --model vgg16 --clients 4 --seconds 20 --job-threads 1

Four kinds of window, each ``--seconds`` long, in ``--rounds`` interleaved rounds (on a shared machine the load
moves; interleaving gives every kind the same moments, and each round's ratio is printed too):

1. model only: :func:`fcn_app.scoring.compute_score_maps` on the decoded working-size image, back to back, on
   the network the server loads (``cli.app.load_command_network``, the same backend; the server is idle
   meanwhile) — images/s;
2. the server (``fcn-heatmap serve`` in a subprocess on 127.0.0.1) under ``--clients`` concurrent HTTP clients
   posting the same image to ``/api/heatmap``, **the page's request** (what the web page sends for a dropped
   image: ``topk=5``, ``pixels=true``, ``pictures=false`` — the JSON summary plus every class's per-cell
   probabilities and the interpolation matrices, about 0.9 MB of JSON for ResNet-18 at 640×480; no overlay is
   drawn, since the page blends its own): requests/s (200s finished inside the window), p50/p95 latency;
   requests/s ÷ model-only images/s is the issue's target, ≥ 0.85;
3. the same with **the default request** (``curl -F image=@…``: the summary plus the overlay PNG drawn and
   encoded), for reference;
4. the CLI's task for one image (decode, score, place on pixels, render, write the overlay): images/s.

Torch (and OpenVINO/ONNX Runtime) run on ``--threads`` threads in both (the server inherits OMP_NUM_THREADS).
With ``--job-threads 2`` (``serve``'s default) the server runs the network for one request at a time on its model
thread while job threads (at a lower CPU priority on Linux) decode, draw and encode others, and its HTTP work
(upload parsing, JSON) runs on the event loop's thread: on a machine with a spare core those overlap the model's
pass — the printed line says so; ``--job-threads 1`` leaves one job thread, so a request's decode and drawing no
longer overlap the next one's pass (only the HTTP work still does). The CPU line says what each costs in CPU time
(the server's includes the pass itself), which is what counts where no core is idle. ``--random-weights``
writes a seeded random state dict of ``--model`` for timing without the real weights (same shapes, same cost).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def photo(path: Path, width: int, height: int) -> Path:
    """A smooth synthetic photo (gradients and a few discs), stored as PNG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    for cx, cy, r, colour in ((0.3, 0.4, 0.15, (230, 40, 40)), (0.7, 0.6, 0.2, (40, 200, 60))):
        inside = (x - cx * width) ** 2 + (y - cy * height) ** 2 < (r * min(width, height)) ** 2
        pixels[inside] = colour
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@dataclass
class Window:
    """One timed window: how many things finished inside it, over how long, the CPU seconds the server process and
    this process used meanwhile; for HTTP also the latencies and statuses."""

    count: int
    seconds: float
    cpu_here: float
    cpu_server: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def total(windows: list[Window]) -> Window:
    return Window(sum(w.count for w in windows), sum(w.seconds for w in windows), sum(w.cpu_here for w in windows),
                  sum(w.cpu_server for w in windows), [x for w in windows for x in w.latencies],
                  [x for w in windows for x in w.statuses])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(run, seconds: float) -> Window:
    run()  # warm-up
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return Window(count, time.perf_counter() - start, time.process_time() - cpu)


#: What the web page posts for a dropped image (fcn_app/serve/static/app.js, method fcn).
PAGE_REQUEST = {"topk": "5", "pixels": "true", "pictures": "false", "method": "fcn"}


def multipart(fields: dict, image: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of ``fields`` and the ``image`` file, and its content type."""
    boundary = "fcn-bench-serve-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def run_clients(port: int, server_pid: int, image: bytes, fields: dict, clients: int, seconds: float) -> Window:
    """``clients`` threads posting ``image`` with ``fields`` to ``/api/heatmap`` for ``seconds``, each on one
    keep-alive connection, the body encoded once (the clients share the machine with the server, so they are
    kept light: the standard library's http.client, every answer read in full): the 200s that finished inside
    the window (those still running at its end are not counted, nor is their time), their latencies, every
    status."""
    import http.client

    body, content_type = multipart(fields, image)
    headers = {"Content-Type": content_type}

    def post(connection) -> int:
        connection.request("POST", "/api/heatmap", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status == 429:
            time.sleep(float(answer.getheader("Retry-After", "1")))
        return answer.status

    warm = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    assert post(warm) == 200, "the warm-up request failed"
    warm.close()
    latencies, statuses, lock, stop = [], [], threading.Lock(), threading.Event()
    cpu_server, cpu_here = process_cpu_seconds(server_pid), time.process_time()
    start = time.perf_counter()
    end = start + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while not stop.is_set():
                sent = time.perf_counter()
                status = post(connection)
                done = time.perf_counter()
                with lock:
                    statuses.append(status)
                    if status == 200 and done <= end:
                        latencies.append(done - sent)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, end - time.perf_counter()))
    cpu_server, cpu_here = process_cpu_seconds(server_pid) - cpu_server, time.process_time() - cpu_here
    stop.set()
    for thread in threads:
        thread.join()
    return Window(len(latencies), seconds, cpu_here, cpu_server, latencies, statuses)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    """The benchmark, its files (random weights, photo, outputs) in ``work``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the four windows")
    parser.add_argument("--job-threads", type=int, default=2, help="serve --job-threads (1: no overlap at all)")
    args = parser.parse_args()

    import httpx
    import torch

    from fcn_app.cli.app import load_command_network
    from fcn_app.device import cpu_flags, cpu_model
    from fcn_app.io import decode_input
    from fcn_app.scoring import compute_score_maps
    from fcn_app.tasks import HeatmapOptions, HeatmapTask, process_input

    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    weights = args.weights
    if args.random_weights:
        import torchvision

        torch.manual_seed(0)
        weights = work / f"{args.model}-random.pth"
        torch.save(torchvision.models.get_model(args.model).state_dict(), weights)
    image = photo(work / "photo.png", args.width, args.height)

    network = load_command_network(model=args.model, weights=weights, checkpoint=None, device="cpu")
    task = HeatmapTask(network, HeatmapOptions())
    decoded = decode_input(image, task.decode_request)

    def score():
        compute_score_maps(network, [decoded.network_pixels])

    def cli_task():
        process_input(task, decode_input(image, task.decode_request), work / "cli", str(image))

    port = free_port()
    command = [sys.executable, "-m", "fcn_app", "serve", "--model", args.model, "--device", "cpu", "--port", str(port),
               "--queue", str(2 * args.clients), "--job-threads", str(args.job_threads)] + (
                   ["--weights", str(weights)] if weights else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    windows: dict[str, list[Window]] = {"model": [], "cli": [], "page": [], "default": []}
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                sys.exit(f"serve exited: {server.stderr.read()}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                sys.exit("serve did not start within 120 s")
        body = image.read_bytes()
        # interleaved rounds: on a shared machine the load moves, and each kind of window sees the same moments
        for _ in range(args.rounds):
            windows["model"].append(rate(score, args.seconds))  # the server is idle meanwhile
            windows["page"].append(run_clients(port, server.pid, body, PAGE_REQUEST, args.clients, args.seconds))
            windows["default"].append(run_clients(port, server.pid, body, {}, args.clients, args.seconds))
            windows["cli"].append(rate(cli_task, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)

    model_only, cli, page = total(windows["model"]), total(windows["cli"]), total(windows["page"])
    runtime = task.scoring.summary(network)
    vector_flags = " ".join(sorted(flag for flag in cpu_flags() if flag.startswith(("avx", "amx", "fma"))))
    print(f"cpu {cpu_model()} · {os.cpu_count()} cores · flags {vector_flags or 'none'} · "
          f"load average {load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"model {args.model} ({runtime['backend']}, {runtime['precision']}) · image {args.width}×{args.height} "
          f"(network sees {decoded.network_pixels.shape[1]}×{decoded.network_pixels.shape[0]}) · {args.threads} "
          f"torch threads · {args.clients} clients · {args.rounds} rounds of {args.seconds:g} s windows")
    print(f"serve --job-threads {args.job_threads}: "
          + ("one job thread: a request's decode→score→render→encode runs start to end before the next (only the "
             "HTTP work overlaps, on the event loop's thread)" if args.job_threads == 1 else
             "the network runs for one request at a time on the model thread; meanwhile other requests' decode, "
             "drawing and encoding run on job threads at a lower priority (overlap: they use a core the model-only "
             "run leaves idle)"))
    per_round = ", ".join(f"{m.rate:.2f}" for m in windows["model"])
    print(f"model only (compute_score_maps)    {model_only.rate:8.2f} images/s   (rounds {per_round})")
    print(f"CLI task (decode→score→render→PNG)  {cli.rate:8.2f} images/s")
    for name, key in (("serve, the page's request", "page"), ("serve, default (+ overlay PNG)", "default")):
        served = total(windows[key])
        quantiles = (statistics.quantiles(served.latencies, n=20) if len(served.latencies) >= 2
                     else [float("nan")] * 19)
        statuses = served.statuses
        print(f"{name:34s} {served.rate:8.2f} requests/s   p50 {quantiles[9] * 1000:.0f} ms   p95 "
              f"{quantiles[18] * 1000:.0f} ms   ({statuses.count(200)} × 200, {statuses.count(429)} × 429, "
              f"{sum(1 for s in statuses if s >= 500)} × 5xx)   ÷ CLI task {served.rate / cli.rate:.2f}")
    rounds = ", ".join(f"{p.rate / m.rate:.2f}" for p, m in zip(windows["page"], windows["model"]))
    best = max(m.rate for m in windows["model"])
    print(f"page's request ÷ model only        {page.rate / model_only.rate:8.2f}   (target ≥ 0.85; per round "
          f"{rounds}; against the fastest model-only window {page.rate / best:.2f})")
    default = total(windows["default"])
    print(f"default request ÷ model only       {default.rate / model_only.rate:8.2f}")
    print(f"CPU per image/request (all threads) model only {model_only.cpu_here / model_only.count * 1000:.1f} ms · "
          f"serve, the page's request {page.cpu_server / page.count * 1000:.1f} ms + clients "
          f"{page.cpu_here / page.count * 1000:.1f} ms · default {default.cpu_server / default.count * 1000:.1f} ms "
          f"(on {os.cpu_count()} cores: where none is idle, every extra CPU ms costs throughput)")


if __name__ == "__main__":
    main()
