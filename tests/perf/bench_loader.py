"""Samples/s of the prepared-data loader vs the per-sample OGM-GE path (JPEG decode + STFT per sample), same workers.

Run: ``python tests/perf/bench_loader.py --clips 300 --workers 2`` (a measurement, not a test: pytest does
not collect it). It calls :func:`orchestrator.bench.loader.loader_ratio`, which ``mmbal bench`` calls too:
a CREMA-D-sized set fabricated in the OGM-GE layout, ``mmbal prepare cremad --profile ogm_ge`` of it, and
training epochs of both loaders timed alternately in this process.
"""

from __future__ import annotations

import argparse
import json

from orchestrator.bench.loader import loader_ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--stored-size", type=int, default=224)
    ap.add_argument("--dir", default=None, help="reuse a fabricated set (and its prepared copy)")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = ap.parse_args()
    result = loader_ratio(
        args.dir, args.clips, args.workers, args.batch, args.rounds, args.image_size, args.stored_size
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.line())


if __name__ == "__main__":
    main()
