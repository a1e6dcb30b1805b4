"""Throughput of the cnn embedder on one core, JPEG decode included: ONNX Runtime and PyTorch.

Per image: the JPEG decoded as the pipeline decodes for an embedder (draft mode to no less
than its `input_size`, then RGB), the crop and resize to 224x224, and the network; 16 images
per `embed_batch` call, run through the network 16 at a time (CNN_BATCH_SIZE, the default) and
one at a time. Both runtimes run on the same files, alternately, `--rounds` times; the result
is the median round. The network alone (on ready 224x224 batches) is measured the same way,
to show where the time goes. Rates are per second of the process's CPU time on one pinned core
(what a core does while other processes share the machine); wall-clock rates are printed too.
Needs the cnn extra.

    .venv/bin/python bench/bench_embed.py [--images 16] [--seconds 3] [--rounds 5]

Targets (the runtime the embedder uses on a CPU, `auto` = ONNX Runtime): >= 25 images/s on
640x480 JPEGs and >= 12 images/s on 12 MP JPEGs, one core. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench._photos import DEFAULT_DIR, photos, pin_to_one_core  # noqa: E402
from plugins.embed_cnn import CNNEmbedder, network_for, preprocess  # noqa: E402

TARGETS = {(640, 480): 25.0, (4000, 3000): 12.0}
RUNTIMES = ("onnx", "torch")
BATCHES = (16, 1)  # the default CNN_BATCH_SIZE first: the targets are checked on it
CALL = 16  # images per embed_batch call


def decode(data: bytes, min_edge: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (min_edge, min_edge))
    return image.convert("RGB")


def embed_files(embedder: CNNEmbedder, files: list[bytes], call: int) -> None:
    for start in range(0, len(files), call):
        images = [decode(data, embedder.input_size) for data in files[start : start + call]]
        embedder.embed_batch(images)


def rate(work, count: int, seconds: float) -> tuple[float, float]:
    """Items per second of this process's CPU time, and per second of wall-clock time, over
    whole passes of `work` (which handles `count` items).

    On one pinned core with one thread, CPU time is what the work costs a core even while
    other processes share it; the wall-clock rate also counts the time they took.
    """
    done, cpu, wall = 0, time.process_time(), time.perf_counter()
    while True:
        work()
        done += count
        elapsed = time.process_time() - cpu
        if elapsed >= seconds:
            return done / elapsed, done / (time.perf_counter() - wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="distinct JPEGs per size")
    parser.add_argument("--seconds", type=float, default=3, help="CPU seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--data", default=DEFAULT_DIR, help="where generated JPEGs are cached")
    args = parser.parse_args()

    note = pin_to_one_core()
    embedders = {
        (runtime, batch): CNNEmbedder(
            {"CNN_RUNTIME": runtime, "CNN_THREADS": 1, "CNN_BATCH_SIZE": batch}
        )
        for runtime in RUNTIMES
        for batch in BATCHES
    }
    load_before = os.getloadavg()
    files = {}
    for size in TARGETS:
        files[size] = []
        for path in photos(args.images, args.data, size):
            with open(path, "rb") as f:
                files[size].append(f.read())
    print(f"{args.images} JPEGs per size, q90; {note}; 1 thread")

    ready = np.stack([preprocess(decode(data, 256)) for data in files[(640, 480)][:16]])
    for embedder in embedders.values():  # load each network before timing
        embed_files(embedder, files[(640, 480)][:2], CALL)
    results: dict[tuple, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for (runtime, batch), embedder in embedders.items():
            network, chunk = network_for(runtime, 1), ready[:batch]
            results.setdefault(("network", runtime, batch), []).append(
                rate(lambda n=network, c=chunk: n.run(c), len(chunk), args.seconds)
            )
            for size, data in files.items():
                results.setdefault((size, runtime, batch), []).append(
                    rate(
                        lambda e=embedder, d=data: embed_files(e, d, CALL), len(data), args.seconds
                    )
                )
    load_after = os.getloadavg()

    def median(key, which: int = 0) -> float:
        return statistics.median(rates[which] for rates in results[key])

    print(
        "images per second of one core's CPU time (wall clock in brackets), "
        f"median of {args.rounds} rounds; bN = N images per forward pass"
    )
    columns = list(embedders)
    print(f"{'':32}" + "".join(f"{f'{r} b{b}':>16}" for r, b in columns))
    ok = True
    rows = [("network alone, 224x224", "network", None)]
    rows += [(f"{w}x{h} JPEG, decode included", (w, h), t) for (w, h), t in TARGETS.items()]
    for label, key, target in rows:
        cells = "".join(f"{median((key, *c)):8.1f} ({median((key, *c), 1):5.1f})" for c in columns)
        onnx = median((key, "onnx", BATCHES[0]))
        torch = max(median((key, "torch", b)) for b in BATCHES)
        verdict = f"onnx/best torch {onnx / torch:.1f}x"
        if target is not None:
            met = onnx >= target
            ok &= met
            verdict = f"target >= {target:g} {'met' if met else 'MISSED'}; " + verdict
        print(f"{label:32}{cells}  {verdict}")
    for key, rates in results.items():
        cpu = [r[0] for r in rates]
        print(f"  {key}: CPU-time rates {min(cpu):.1f}..{max(cpu):.1f} over the rounds")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
