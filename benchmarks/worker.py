"""One benchmark worker process: builds one implementation, then times blocks of calls on demand.

``python -m benchmarks.worker step NAME`` | ``opt NAME SHAPES`` | ``copy N``; ``SHAPES`` is
``seed`` (the seed model's four arrays) or a parameter count. It prints one JSON line: ``{"ready":
true}`` or ``{"skip": reason}``; then, for every ``run K`` line on stdin, one JSON list of the K
call times in seconds. The parent keeps the process alive across rounds, so imports, compilation
and warm-up happen once.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks import impls


def _build(argv: list[str]) -> impls.Step:
    kind, name = argv[0], argv[1]
    if kind == "step":
        return impls.STEP_IMPLS[name]()
    if kind == "opt":
        shapes = impls.seed_shapes() if argv[2] == "seed" else [(int(argv[2]),)]
        return impls.OPT_IMPLS[name](shapes)
    if kind == "copy":
        return impls.streaming_copy(int(name))
    raise SystemExit(f"unknown worker kind {kind!r}")


def main(argv: list[str]) -> None:
    """Serve ``run K`` requests on stdin until EOF."""
    try:
        fn = _build(argv)
    except ImportError as exc:
        print(json.dumps({"skip": f"{exc.name or exc} not installed"}), flush=True)
        return
    for _ in range(20):  # compile, allocate, warm caches
        fn()
    print(json.dumps({"ready": True}), flush=True)
    clock = time.perf_counter
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] != "run":
            break
        times = []
        for _ in range(int(parts[1])):
            t0 = clock()
            fn()
            times.append(clock() - t0)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
