"""Compare funcopt with optax and torch.optim, one process per measurement, and write docs/benchmarks.md.

    python benchmarks/run.py                # the full table, 3 processes per cell (about 30 minutes on 2 cores)
    python benchmarks/run.py --quick        # fewer steps and one round, for a smoke run
    python benchmarks/run.py --device gpu   # the same on the GPU, into docs/benchmarks_gpu.md
    python benchmarks/run.py --train --quick --workloads transformer  # train steps only, printed, no report

The GPU run needs JAX with CUDA (``pip install "jax[cuda12]"``) and a CUDA build of torch; JAX runs
with ``JAX_PLATFORMS=cuda`` and torch on ``cuda``. A contender that cannot run is reported as an error.

Contenders: funcopt's stateful ``step()`` (packed buffers), the same with ``fused=True`` (Adam, AdamW
and SGD with momentum run a native one-pass kernel per CPU buffer),
funcopt's functional update in a jitted, donated step, optax jitted and donated, torch.optim with
foreach and with fused kernels.
The train-step workloads time a whole training step (loss + gradient + Adam; the loss multiplies
each weight matrix by a batch of 32 inputs) on the ResNet-50-like and transformer-like trees and on
1000 small matrices: optax per leaf in one jitted, donated function, funcopt's functional update in
the same function, funcopt's stateful ``opt.backward(loss_fn, x); opt.step()`` and ``opt(grads)``
with gradients from a jitted ``jax.grad``.
Reported: median step time, compile time (first call minus a step), the memory held between steps
and the rise during them, achieved bandwidth against the streaming bandwidth measured in the same run,
and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONTENDERS = ["funcopt-step", "funcopt-fused", "funcopt-jit", "optax", "torch-fused", "torch-foreach"]
WORKLOADS = ["resnet50", "transformer", "3000-leaves", "one-buffer-2M", "one-buffer"]
OPTIMIZERS = ["adam", "sgd", "adamw"]
TRAIN_CONTENDERS = ["optax-train", "funcopt-train", "funcopt-packed", "funcopt-backward", "funcopt-call"]
TRAIN_WORKLOADS = ["resnet50", "transformer", "1000-leaves"]
SMALL_WORKLOADS = ("3000-leaves", "one-buffer-2M")  # steps of a few ms: more of them per process
SMALL_STEPS_FACTOR = 10


def measure(args: list[str], device: str = "cpu") -> dict:
    platform_default = "cuda" if device == "gpu" else "cpu"
    # the allocator as users have it while steps are timed; the worker changes it for its memory steps only
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", platform_default))
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median step time, with the spread of all runs (max - min) / median."""
    ok = sorted((r for r in runs if "step_ms" in r), key=lambda r: r["step_ms"])
    if not ok:
        return runs[0]
    mid = dict(ok[(len(ok) - 1) // 2])
    mid.update(runs=len(ok), spread=(ok[-1]["step_ms"] - ok[0]["step_ms"]) / mid["step_ms"])
    return mid


def measure_interleaved(contenders: list[str], args_of, rounds: int, device: str = "cpu") -> dict[str, dict]:
    """Each contender ``rounds`` times, alternating the order, so that drift of the machine hits all alike.

    A cell that took more than 5 s to compile is measured once: its step time is far from the others.
    A cell whose steps take under 5 ms is measured in three times as many processes (they are cheap,
    and the machine's drift is largest relative to them).
    """
    runs: dict[str, list[dict]] = {c: [] for c in contenders}

    def wanted(c: str) -> int:
        first = runs[c][0] if runs[c] else {}
        if "error" in first or first.get("compile_s", 0.0) > 5.0:
            return 1
        return 3 * rounds if first.get("step_ms", float("inf")) < 5.0 else rounds

    for k in range(3 * rounds):
        for c in contenders if k % 2 == 0 else contenders[::-1]:
            if len(runs[c]) < (wanted(c) if runs[c] else 1):
                runs[c].append(measure(args_of(c), device))
    return {c: median_run(r) for c, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps, one round and only Adam")
    ap.add_argument("--rounds", type=int, default=3, help="processes per cell (the median is reported)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                    help="where JAX and torch run (gpu: JAX_PLATFORMS=cuda and torch on cuda)")
    ap.add_argument("--out", default=None, help="the report (docs/benchmarks.md, or docs/benchmarks_gpu.md)")
    ap.add_argument("--train", action="store_true",
                    help="only the train-step workloads: print their table, write no report")
    ap.add_argument("--workloads", nargs="*", default=None,
                    help="only these train-step workloads (N-leaves: N small matrices, e.g. 200-leaves)")
    ap.add_argument("--steps", type=int, default=None, help="steps per process (default 30, 8 with --quick)")
    ap.add_argument("--keep-train", action="store_true",
                    help="measure the update tables only; the report keeps its train-step section as it was")
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "docs", "benchmarks_gpu.md" if args.device == "gpu" else "benchmarks.md")
    steps = args.steps or (8 if args.quick else 30)
    rounds = 1 if args.quick else args.rounds
    optimizers = ["adam"] if args.quick else OPTIMIZERS
    worker = os.path.join(HERE, "_worker.py")
    kept = kept_train_section(out) if args.keep_train else None
    if args.keep_train and kept is None:
        raise SystemExit(f"--keep-train: {out} has no train-step section to keep")
    train_rows = [] if kept else train_steps(worker, args.workloads or TRAIN_WORKLOADS, steps, rounds, args.device)
    if args.train:
        print("\n".join(train_table(train_rows)))
        return

    triad = measure([os.path.join(HERE, "_triad.py"), args.device], args.device)
    print(f"bandwidth: in place {triad.get('inplace_gbs', float('nan')):.1f} GB/s, "
          f"triad {triad.get('triad_gbs', float('nan')):.1f} GB/s", flush=True)
    rows = []
    for opt in optimizers:
        for wl in WORKLOADS:
            n = steps * SMALL_STEPS_FACTOR if wl in SMALL_WORKLOADS else steps
            cells = measure_interleaved(
                CONTENDERS, lambda c, wl=wl, opt=opt, n=n: [worker, c, wl, opt, str(n), args.device],
                rounds, args.device)
            for c in CONTENDERS:
                r = dict(cells[c], contender=c, workload=wl, optimizer=opt)
                rows.append(r)
                print(json.dumps(r), flush=True)
    tiny = measure_interleaved(CONTENDERS, lambda c: [worker, c, "tiny", "adam", "300", args.device],
                               rounds, args.device)
    for c, r in tiny.items():
        print("tiny", c, json.dumps(r), flush=True)
    write_report(out, rows, tiny, triad, steps, rounds, args.device, train_rows, kept)


TRAIN_HEADING = "## Train step: loss + grad + Adam"


def kept_train_section(path: str) -> list[str] | None:
    """The train-step section of an existing report, marked as kept from its earlier run (None if absent)."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if TRAIN_HEADING not in lines:
        return None
    start = lines.index(TRAIN_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    measured = next((line for line in lines if line.startswith("Measured ")), "")
    when = measured.split()[1] if len(measured.split()) > 1 else "an earlier run"
    note = [line for line in lines[start + 1:end] if line.startswith("*This section was measured")]
    section = [line for line in lines[start + 1:end] if not line.startswith("*This section was measured")]
    note = note or [f"*This section was measured {when} and kept when the update tables above were measured "
                    "again (`--keep-train`).*"]
    return [TRAIN_HEADING, "", *note, *section]


def train_steps(worker: str, workloads: list[str], steps: int, rounds: int, device: str = "cpu") -> list[dict]:
    """The train-step contenders on each workload, interleaved (Adam); one row per cell."""
    rows = []
    for wl in workloads:
        cells = measure_interleaved(TRAIN_CONTENDERS, lambda c, wl=wl: [worker, c, wl, "adam", str(steps), device],
                                    rounds, device)
        for c in TRAIN_CONTENDERS:
            r = dict(cells[c], contender=c, workload=wl, optimizer="adam")
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def train_table(rows: list[dict]) -> list[str]:
    """The train-step table (step and compile time as ratios to optax's jitted train step) and its targets."""
    lines = [TRAIN_HEADING, "",
             "One training step per call: a loss that multiplies each weight matrix by a batch of 32 inputs (a "
             "vector scales its batch elementwise), its gradient and Adam's update. *optax-train* and "
             "*funcopt-train* are the same jitted, donated function with `optax.adam` and `fo.adam` (per leaf); "
             "*funcopt-packed* the same with the parameters held as `fo.pack(params)` (small leaves in one "
             "buffer) and unpacked inside the loss; "
             "*funcopt-backward* is the stateful `opt.backward(loss_fn, x); opt.step()`, *funcopt-call* "
             "`opt(grads)` with gradients from a jitted `jax.grad`.", "",
             "| workload | leaves | params | contender | step ms | x optax | compile s | compile x optax |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(wl: str, c: str) -> dict:
        return next((r for r in rows if r["workload"] == wl and r["contender"] == c and "step_ms" in r), {})

    def ratio(a: dict, b: dict, key: str) -> float | None:
        return a[key] / b[key] if a and b and b[key] > 0 else None

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    for wl in workloads:
        ref = cell(wl, "optax-train")
        for c in TRAIN_CONTENDERS:
            r = next((r for r in rows if r["workload"] == wl and r["contender"] == c), {})
            if "step_ms" not in r:
                lines.append(f"| {wl} | | | {c} | error: {r.get('error', 'missing')} | | | |")
                continue
            lines.append(f"| {wl} | {r['leaves']} | {r['params'] / 1e6:.1f}M | {c} | {r['step_ms']:.2f} "
                         f"±{100 * r.get('spread', 0.0):.0f}% | {_fmt(ratio(r, ref, 'step_ms'), '.2f')} "
                         f"| {r['compile_s']:.2f} | {_fmt(ratio(r, ref, 'compile_s'), '.2f')} |")
    lines += ["", "| target (train step) | measured | |", "|---|---|---|"]
    for wl in workloads:
        ref, ours = cell(wl, "optax-train"), cell(wl, "funcopt-train")
        for key, what in (("step_ms", "step"), ("compile_s", "compile")):
            value = ratio(ours, ref, key)
            lines.append(f"| {wl}: functional per leaf {what} <= 1.0x optax | {_fmt(value, '.2f')}x | "
                         f"{'n/a' if value is None else 'met' if value <= 1.0 else 'not met'} |")
        value = ratio(cell(wl, "funcopt-backward"), ref, "step_ms")
        lines.append(f"| {wl}: stateful backward + step <= 1.1x optax's train step | {_fmt(value, '.2f')}x | "
                     f"{'n/a' if value is None else 'met' if value <= 1.1 else 'not met'} |")
        bound = 0.5 if wl == "1000-leaves" else 1.0
        value = ratio(cell(wl, "funcopt-packed"), ref, "step_ms")
        lines.append(f"| {wl}: packed train step <= {bound}x optax's train step | {_fmt(value, '.2f')}x | "
                     f"{'n/a' if value is None else 'met' if value <= bound else 'not met'} |")
        if wl == "1000-leaves":
            value = ratio(cell(wl, "funcopt-call"), ref, "step_ms")
            lines.append(f"| {wl}: jitted grad + `opt(grads)` <= 1.2x optax's train step | {_fmt(value, '.2f')}x "
                         f"| {'n/a' if value is None else 'met' if value <= 1.2 else 'not met'} |")
    return lines + [""]


DESIGN_NOTES = [
    "## What the stateful step does, and what bounds it on CPU",
    "",
    "- Each parameter group of an elementwise optimizer (Adam, AdamW, SGD...) keeps its small leaves (up to 16384 "
    "elements) in one flat buffer per dtype, and so do its gradients and state: a step is one XLA loop per buffer "
    "whatever the number of small leaves, and it compiles in a fraction of a second where a per-leaf program for "
    "3000 leaves takes tens of seconds. Larger leaves stay arrays of their own: in a train step, packing them "
    "costs a copy of their gradients (the concatenate) and of their parameters (the slices the loss reads), which"
    " made `backward` + `step` 1.3-1.4x optax's train step on the ResNet-like and transformer-like trees.",
    "- The step is one jitted call that donates parameters and state, so XLA updates them in place; the table's "
    "*step extra MB* shows no temporary copy.",
    "- A weight decay held in the state is a traced number, and `g + wd * p` would read the parameters in the loop "
    "that updates the moments even when `wd` is 0 (IEEE arithmetic does not let XLA drop `0 * p`). The step is "
    "traced with a literal 0 for the groups whose weight decay is 0 at the first step; a general variant, used "
    "when a weight decay leaves 0, compiles the first time that happens (once). Other edits compile nothing.",
    "- What bounds Adam's default step against torch's fused CPU kernel: XLA:CPU writes each output array from "
    "its own loop, and it does not fuse a producer with its consumer when both must be written out. Adam's step is "
    "thus three loops (first moment, second moment, then the parameters, which read both moments back): 10 memory "
    "accesses per parameter where torch's hand-written kernel makes 7 (read parameter, gradient, two moments; "
    "write parameter, two moments). Both run near the machine's streaming bandwidth on all cores, so the ratio "
    "settles near 10/7 (the one-buffer rows show it without any per-leaf cost; optax on one buffer makes the same "
    "three loops and takes the same time). Within XLA, nothing tried reached 7: moments stored as one interleaved "
    "(complex) array would make 9 but need every rule split in two phases; cache-sized blocks in a `while` loop "
    "make 7, but XLA:CPU runs a loop body on one core (23 ms against 20 ms for the three loops on a 25.6M "
    "buffer). SGD with momentum makes 6 accesses (two loops) against torch's 5; XLA writes both in one loop only "
    "if the parameters and buffers are stored interleaved as one (n, 2) array, and that loop ran about 8x slower "
    "than the two loops on a 25.6M buffer.",
    "- `fused=True` (Adam, AdamW and SGD with momentum, as in torch) lifts that bound: each packed float32 / "
    "float64 CPU buffer goes through one native pass (C++ called through XLA's FFI, inside the same jitted, "
    "donated step, split over XLA's CPU threads), 7 accesses for Adam and 5 for SGD like torch's kernels; the "
    "hyperparameters stay traced values, so editing them compiles nothing. It is opt-in because it needs a C++ "
    "compiler: the kernels are built once per machine on first use (a few seconds) and cached. Their numbers "
    "are checked against `torch.optim.Adam(fused=True)` and `torch.optim.SGD(fused=True)` step by step in the "
    "test suite.",
    "- optax runs one loop per leaf and per statistic: more loops, more dispatch and a compile time that grows "
    "with the number of leaves.",
    "- The functional optimizers (`fo.adam(...)`...) are written per leaf; their loop over the leaves is traced "
    "once and its repeated scalar equations merged, so what depends only on the step and the hyperparameters "
    "(casts, bias corrections, RAdam's rectification) is computed once per step, not per leaf: Adam's update is "
    "14 equations per leaf against optax's 15 (25 before), RAdam's 21 (159 before). With parameters given, a "
    "weight decay held as data still reads them even at 0 (see above; the functional API cannot choose a "
    "variant by value): one array more per leaf than `optax.adam`, which has no weight decay.",
    "- `backward` differentiates the loss through views of the packed buffers, cut by one `lax.split` per "
    "buffer, so the gradient comes back packed by one concatenate and costs the same per leaf at 1000 leaves as"
    " at 100. A `lax.slice` per leaf would transpose to one pad of the whole buffer per leaf, a gradient in "
    "(leaves x buffer size); `opt.params`, which is not differentiated, keeps per-leaf slices, immediate "
    "outside `jit` where a split of many leaves compiles for seconds. Measured on 2026-12-07 with `python "
    "benchmarks/backward_scaling.py` (Adam, loss `sum(sin(p * x) ** 2)` over the leaves; medians of 7 rounds of"
    " 20 calls, on 2 cores shared with other work, so the figures are rough): `backward` + `step` took 1.3-2.3 "
    "/ 2.5-4.2 / 4.8-5.3 ms for 100 / 200 / 400 leaves of 700 floats (25 / 124 / 721 ms with a slice per leaf),"
    " where optax's jitted loss + grad + update took 1.8-2.6 / 4.0-5.1 / 7.9-9.8 ms; for 1000 leaves of 200 to "
    "1200 floats, 15-18 ms (1.5 s with a slice per leaf) against optax's 45-80 ms.",
    "- What `backward` compiles: XLA:CPU compiles one kernel per distinct fused computation, so a per-leaf "
    "program shares its kernels between leaves of one shape, while slices of one buffer at constant offsets make"
    " every leaf's computations distinct (tens of milliseconds of compile each). `backward` therefore cuts the "
    "packed buffers at offsets given to its program as arguments (its transpose is still one concatenate): a "
    "loss over 100 leaves of 256 floats compiled in 0.7 s instead of 5.6 s. A large leaf is stored without its "
    "unit dimensions: the gradient of a `(out, in, 1, 1)` kernel that the loss reshapes to a matrix is the matrix"
    " product's output, where XLA:CPU copied it back into 4-D as the program's output (on the ResNet-like tree "
    "12M of the 25.6M gradient elements; `backward` + `step` now access as many bytes as optax's train step).",
    "",
]


def targets(rows: list[dict], tiny: dict, bandwidth: float | None = None, device: str = "cpu") -> list[str]:
    """The performance targets of the stateful step, each with what this run measured.

    On a GPU one more: the step on the large buffer reaches 80% of the measured in-place bandwidth.
    """
    def cell(wl: str, c: str, opt: str = "adam") -> dict:
        return next((r for r in rows if r["workload"] == wl and r["contender"] == c and r["optimizer"] == opt
                     and "step_ms" in r), {})

    def ratio(a: dict, b: dict) -> float | None:
        return a["step_ms"] / b["step_ms"] if a and b else None

    def row(target: str, value: float | None, spec: str, ok) -> str:
        """A table row: ``value`` shown as ``spec`` ("{:.2f}x") and ``ok(value)``'s verdict."""
        if value is None:
            return f"| {target} | n/a | n/a |"
        return f"| {target} | {spec.format(value)} | {'met' if ok(value) else 'not met'} |"

    torch_name = "torch fused CUDA" if device == "gpu" else "torch fused"
    lines = ["## Targets of the stateful step (this run)", "", "| target | measured | |", "|---|---|---|"]
    for contender, how in (("funcopt-step", ""), ("funcopt-fused", " (`fused=True`)")):
        step = cell("resnet50", contender)
        lines += [row(f"Adam{how} on the ResNet-50-like tree <= 1.0x {torch_name}",
                      ratio(step, cell("resnet50", "torch-fused")), "{:.2f}x", lambda x: x <= 1.0),
                  row(f"Adam{how} on the ResNet-50-like tree <= 0.5x optax",
                      ratio(step, cell("resnet50", "optax")), "{:.2f}x", lambda x: x <= 0.5)]
    leaves = cell("3000-leaves", "funcopt-step")
    dispatch = tiny.get("funcopt-step", {}).get("step_ms")
    mem = [r for r in rows if r["contender"] in ("funcopt-step", "funcopt-fused") and "live_mb" in r]
    worst = max(((r["live_mb"] + r["step_extra_mb"]) / r["state_mb"] for r in mem), default=None)
    lines += [
        row("3000 leaves: step within 1.5x of one buffer of the same size",
            ratio(leaves, cell("one-buffer-2M", "funcopt-step")), "{:.2f}x", lambda x: x <= 1.5),
        row("3000 leaves: compile under 3 s", leaves.get("compile_s"), "{:.2f} s", lambda x: x < 3.0),
        row("`step()` dispatch on a tiny model under 30 us", dispatch and dispatch * 1e3, "{:.1f} us",
            lambda x: x < 30.0),
        row("step peak <= params + grads + state + 5% (all workloads)", worst, "{:.3f}x", lambda x: x <= 1.05),
    ]
    if device == "gpu":
        big = cell("one-buffer", "funcopt-step")
        percent = 100 * big["gbytes_per_s"] / bandwidth if big and bandwidth else None
        lines.append(row("Adam on one 25.6M buffer >= 80% of the measured bandwidth", percent, "{:.0f}%",
                         lambda x: x >= 80.0))
    return lines + [""]


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def write_report(path: str, rows: list[dict], tiny: dict, triad: dict, steps: int, rounds: int,
                 device: str = "cpu", train_rows: list[dict] | None = None,
                 train_section: list[str] | None = None) -> None:
    bw = triad.get("inplace_gbs")
    gpu = device == "gpu"
    where = (f"on {triad.get('device_kind', 'a GPU')} (JAX with CUDA, torch on cuda)" if gpu else
             f"on {platform.machine()} with {os.cpu_count()} cores (CPU only; a GPU run, `--device gpu`, writes "
             "its own page, benchmarks_gpu)")
    if gpu:
        memory = ("*step extra MB* is the allocator's peak (XLA's `peak_bytes_in_use`, torch's "
                  "`max_memory_allocated` reset before the timed steps) minus what was held before them; for JAX "
                  "the peak counts from the start of the process, so the figure is an upper bound.")
        kernels = "jitted JAX programs on the GPU"
    else:
        memory = ("*step extra MB* is how far the resident memory rose above its level before them during a "
                  "few steps run after the timed ones, with glibc told to give large freed blocks back to the OS "
                  "(so a temporary made by a step shows there). The timed steps run with the allocator's default "
                  "settings: with every block over 64 KB mapped afresh, a step pays page faults on each new array "
                  "(measured: the stateful ResNet-like train step 122-130 ms by default, 236-241 ms so; optax's "
                  "164-168 and 225-230 ms), which is no user's setting.")
        kernels = "multi-threaded torch kernels"
    lines = [
        "# Benchmarks" + (" on a GPU" if gpu else ""),
        "",
        f"Measured {date.today().isoformat()} {where}, Python {platform.python_version()}.",
        f"Streaming bandwidth measured in the same run: **{_fmt(bw, '.1f')} GB/s** updating an array in place "
        f"(`a += s * c`), {_fmt(triad.get('triad_gbs'), '.1f')} GB/s for the triad `a = b + s * c`. "
        f"Each cell is the median of {steps} "
        f"steps ({steps * SMALL_STEPS_FACTOR} for the 2M-parameter workloads) in a fresh process; each cell was "
        f"measured in {rounds} processes ({3 * rounds} when a step takes under 5 ms), the contenders of a workload "
        "taking turns, and the process with the median step time is reported (± is the spread of the processes: "
        "(slowest - fastest) / median; cells that compile for more than 5 s run once). "
        f"Reproduce with `python benchmarks/run.py{' --device gpu' if gpu else ''}`.",
        "",
        "Ratios are step time divided by torch fused's or optax's (lower is better; < 1 is faster).",
        "",
        "How to read the other columns:",
        "",
        "- *compile s* is the first call minus a steady step (XLA compilation for the JAX contenders).",
        "- *live MB* is what the process holds in arrays between steps (for JAX `jax.live_arrays()`, for torch the "
        "parameters, gradients and optimizer state), next to what parameters + gradients + state must take. "
        f"{memory} A step's peak is live + extra.",
        "- *GB/s* counts the bytes an update must move (28 per fp32 parameter for Adam and AdamW: read parameter, "
        "gradient and two moments, write parameter and moments; 20 for SGD with momentum), and the percentage "
        f"compares it with the in-place bandwidth above ({kernels}). An optimizer step has the same access "
        "pattern, every array it writes is also read; the triad's third array costs an extra read on a CPU "
        "(write-allocate), which is why it reports less. The 2M-parameter workloads (30 MB) partly stay in the "
        "last-level cache between steps, so they can pass 100%.",
        "",
    ]
    versions = {}
    try:
        import jax
        import optax
        import torch

        versions = {"jax": jax.__version__, "optax": optax.__version__, "torch": torch.__version__}
    except ImportError:
        pass
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    for opt in sorted({r["optimizer"] for r in rows}, key=OPTIMIZERS.index):
        lines += [f"## {opt}", "",
                  "| workload | leaves | params | contender | step ms | x torch fused | x optax | compile s "
                  "| live MB (params+grads+state) | step extra MB | GB/s (% in place) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for wl in WORKLOADS:
            group = {r["contender"]: r for r in rows if r["optimizer"] == opt and r["workload"] == wl}
            ref = group.get("torch-fused", {}).get("step_ms")
            ox = group.get("optax", {}).get("step_ms")
            for c in CONTENDERS:
                r = group.get(c, {})
                if "error" in r or "step_ms" not in r:
                    lines.append(f"| {wl} | | | {c} | error: {r.get('error', 'missing')} | | | | | | |")
                    continue
                pct = 100 * r["gbytes_per_s"] / bw if bw else None
                vs_torch = _fmt(r["step_ms"] / ref if ref else None, ".2f")
                vs_optax = _fmt(r["step_ms"] / ox if ox else None, ".2f")
                lines.append(
                    f"| {wl} | {r['leaves']} | {r['params'] / 1e6:.1f}M | {c} | {r['step_ms']:.2f} "
                    f"±{100 * r.get('spread', 0.0):.0f}% | {vs_torch} | {vs_optax} "
                    f"| {r['compile_s']:.2f} | {r['live_mb']:.0f} ({r['state_mb']:.0f}) | {r['step_extra_mb']:.0f} "
                    f"| {r['gbytes_per_s']:.1f} ({_fmt(pct, '.0f')}%) |")
        lines.append("")
    lines += targets(rows, tiny, bw, device)
    if train_rows:
        lines += train_table(train_rows)
    elif train_section:
        lines += train_section
    lines += ["## Dispatch overhead", "",
              "Adam on a two-leaf model (20 floats): the whole cost of one step call.", "",
              "| contender | step us |", "|---|---|"]
    for c, r in tiny.items():
        lines.append(f"| {c} | {_fmt(r.get('step_ms', None) and r['step_ms'] * 1e3, '.1f')} |")
    lines += ["", f"![step time ratios]({'benchmarks_gpu.png' if gpu else 'benchmarks.png'})", ""]
    lines += [] if gpu else DESIGN_NOTES
    plot(os.path.join(os.path.dirname(path), "benchmarks_gpu.png" if gpu else "benchmarks.png"), rows)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


def plot(path: str, rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    adam = [r for r in rows if r["optimizer"] == "adam" and "step_ms" in r]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(CONTENDERS)
    for i, c in enumerate(CONTENDERS):
        vals = []
        for wl in WORKLOADS:
            ref = next((r["step_ms"] for r in adam if r["workload"] == wl and r["contender"] == "torch-fused"), None)
            val = next((r["step_ms"] for r in adam if r["workload"] == wl and r["contender"] == c), None)
            vals.append(val / ref if ref and val else 0)
        ax.bar([j + i * width for j in range(len(WORKLOADS))], vals, width, label=c)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + (len(CONTENDERS) - 1) * width / 2 for j in range(len(WORKLOADS))], WORKLOADS)
    ax.set_ylabel("Adam step time / torch fused")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
