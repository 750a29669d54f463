"""One benchmark worker process: builds one implementation, then times blocks of calls on demand.

``python -m benchmarks.worker step NAME`` | ``mlp NAME`` | ``opt NAME SHAPES`` |
``stream N_STATE SIZES`` | ``family OPTIMIZER minnet|peer SIZES`` | ``lowp ROW SIZES`` |
``layer WORKLOAD/NAME THREADS`` (``benchmarks.layers``) (``ROW``: a
name in ``benchmarks.impls.LOWP``, one argument); ``SHAPES`` is ``seed`` (the
seed model's four arrays) or a parameter count, ``SIZES`` a comma-separated list of parameter
counts (one instance per size). It prints one JSON line: ``{"ready": true, "per_call": {key:
seconds}}`` (one warm call's time per instance, to size the blocks) or ``{"skip": reason}``;
then, for every ``run K [KEY]`` line on stdin, one JSON list of the K call times in seconds
(``KEY``: which size; without it, the first instance). The parent keeps the process alive across
rounds, so imports, compilation and warm-up happen once.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks import impls

WARM_CALLS = 20  # compile, allocate, warm caches ...
WARM_SECONDS = 0.5  # ... but no longer than this per instance (large sizes)


def _build(argv: list[str]) -> dict[str, impls.Step]:
    """``{key: step}``; a single-instance kind has the key ``""``."""
    kind, name = argv[0], argv[1]
    if kind == "step":
        return {"": impls.STEP_IMPLS[name]()}
    if kind == "mlp":
        return {"": impls.MLP_IMPLS[name]()}
    if kind == "opt":
        shapes = impls.seed_shapes() if argv[2] == "seed" else [(int(argv[2]),)]
        return {"": impls.OPT_IMPLS[name](shapes)}
    if kind == "stream":
        return {s: impls.streaming_loop(int(s), int(name)) for s in argv[2].split(",")}
    if kind == "family":
        build = impls.family_minnet if argv[2] == "minnet" else impls.family_peer
        return {s: build(name, int(s)) for s in argv[3].split(",")}
    if kind == "layer":
        from benchmarks import layers

        workload, impl = name.split("/")
        return {"": layers.build(workload, impl, argv[2])}
    if kind == "lowp":
        return {s: impls.lowp_step(name, int(s)) for s in argv[2].split(",")}
    raise SystemExit(f"unknown worker kind {kind!r}")


def _warm(fn: impls.Step) -> float:
    """Call ``fn`` until warm; return the median time of the last few calls."""
    clock = time.perf_counter
    t_start = clock()
    times = []
    for _ in range(WARM_CALLS):
        t0 = clock()
        fn()
        times.append(clock() - t0)
        if len(times) >= 3 and clock() - t_start > WARM_SECONDS:
            break
    last = sorted(times[-3:])
    return last[len(last) // 2]


def main(argv: list[str]) -> None:
    """Serve ``run K [KEY]`` requests on stdin until EOF."""
    try:
        fns = _build(argv)
    except impls.Unavailable as exc:
        print(json.dumps({"skip": str(exc)}), flush=True)
        return
    except ImportError as exc:
        print(json.dumps({"skip": f"{exc.name or exc} not installed"}), flush=True)
        return
    per_call = {key: _warm(fn) for key, fn in fns.items()}
    print(json.dumps({"ready": True, "per_call": per_call}), flush=True)
    clock = time.perf_counter
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] != "run":
            break
        fn = fns[parts[2]] if len(parts) > 2 else next(iter(fns.values()))
        times = []
        for _ in range(int(parts[1])):
            t0 = clock()
            fn()
            times.append(clock() - t0)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
