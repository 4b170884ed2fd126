"""`fcn-heatmap serve` under load: 32 concurrent clients against the real command (127.0.0.1, a subprocess) for a
few seconds. Every request is answered 200 or 429 (never 5xx, never dropped), and the server's resident memory
stays within 10 % of what it was after warm-up."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
import httpx  # noqa: E402

from helpers_serve import TINY, png_bytes, serve_subprocess  # noqa: E402

CLIENTS = 32
WARM_UP_S, LOADED_S = 2.0, 5.0


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_32_clients_get_200_or_429_and_memory_stays_flat():
    image = png_bytes(96, 128, seed=7)
    with serve_subprocess("--model", TINY, "--queue", "8") as (url, process):
        statuses: Counter = Counter()
        failures: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client():
            with httpx.Client(base_url=url, timeout=30) as session:
                while not stop.is_set():
                    try:
                        answer = session.post("/api/heatmap", files={"image": ("load.png", image)})
                    except httpx.HTTPError as error:  # a dropped connection counts as unanswered
                        with lock:
                            failures.append(repr(error))
                        continue
                    with lock:
                        statuses[answer.status_code] += 1
                    if answer.status_code == 429:
                        assert int(answer.headers["Retry-After"]) >= 1
                        time.sleep(0.05)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_S)
        after_warm_up = resident_bytes(process.pid)
        samples = []
        deadline = time.monotonic() + LOADED_S
        while time.monotonic() < deadline:
            time.sleep(0.5)
            samples.append(resident_bytes(process.pid))
        stop.set()
        for thread in threads:
            thread.join(30)
        assert httpx.get(url + "/healthz").status_code == 200
    print(f"\nload: {dict(statuses)} answers from {CLIENTS} clients in {WARM_UP_S + LOADED_S:g} s; RSS after warm-up "
          f"{after_warm_up / 2**20:.1f} MiB, max later {max(samples) / 2**20:.1f} MiB")
    assert not failures, failures[:3]
    assert set(statuses) <= {200, 429} and statuses[200] > 0, statuses
    assert max(samples) <= 1.10 * after_warm_up, (after_warm_up, samples)
