"""Where one generation's time goes, step by step, idle and during another caller's burst.

Profilers change these timings too much (a step is a fraction of a millisecond), so
this times the steps themselves: it starts `imagegate serve` (the configuration of
bench/compare.py: an `openai-images` relay on the fake upstream) through a wrapper that
puts a `perf_counter` around each of the coroutines in STEPS, per caller, and prints
each step's calls and mean time per generation of the measured caller:

- idle: `--calls` sequential generations of one caller (256 px, or `--size`);
- burst: such a generation by one caller started 50 ms into another caller's 16 x
  1024 px (bench/compare.py's burst), `--bursts` times.

Steps nest (a generation's `_generate` holds its `produce`); a step's count says how
often the caller passed through it (the database's hand-offs to a thread, say).

    .venv/bin/python bench/bench_steps.py [--calls 60] [--bursts 5] [--size 256]
"""

import argparse
import asyncio
import functools
import importlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

STEPS = [
    ("imagegate.service.images", "ImageService.admit"),
    ("imagegate.service.images", "ImageService._generate"),
    ("imagegate.service.images", "produce"),
    ("imagegate.service.images", "ImageService._store"),
    ("imagegate.service.images", "ImageService._marked"),
    ("imagegate.service.images", "run_cpu"),
    ("imagegate.service.generation", "run_cpu"),
    ("imagegate.relays.wire.http", "run_cpu"),
    ("imagegate.relays.wire.http", "Upstream._open"),
    ("imagegate.relays.wire.http", "Upstream.read_json"),
    ("imagegate.core.cpu", "FairShare._wait_turn"),
    ("imagegate.storage.assets", "AssetStore.add"),
    ("imagegate.storage.files", "FileBlobStore.prepare"),
    ("imagegate.storage.files", "FileBlobStore.commit"),
    ("imagegate.storage.sqlite.database", "Database.read"),
    ("imagegate.storage.sqlite.database", "Database.write"),
    ("imagegate.storage.sqlite.database", "_in_thread"),
    ("imagegate.service.jobs", "JobRunner._end"),
]
"""(module, coroutine function) of each step timed, from the service down: those act
for a caller (core.cpu.acting_subject), which is how a step is counted for the
measured one. A name a module imported is timed where it is called (run_cpu)."""
OUT_ENV = "IMAGEGATE_BENCH_STEPS_OUT"


# The wrapped server -------------------------------------------------------------------


def serve() -> None:
    """`imagegate serve` with STEPS timed; SIGUSR1 starts (and clears) the timing,
    SIGUSR2 writes it, by caller, to the file OUT_ENV names."""
    from imagegate.core.cpu import acting_subject

    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    timing = [False]

    def timed_step(owner: Any, name: str, label: str) -> None:
        step = getattr(owner, name)

        @functools.wraps(step)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await step(*args, **kwargs)
            finally:
                if timing[0]:
                    total = totals[acting_subject() or "-"][label]
                    total[0] += 1
                    total[1] += time.perf_counter() - started

        setattr(owner, name, timed)

    for module, qualname in STEPS:
        owner: Any = importlib.import_module(module)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        label = qualname if qualname != "run_cpu" else f"run_cpu ({module.rsplit('.', 1)[-1]})"
        timed_step(owner, name, label)

    def start(*_: object) -> None:
        totals.clear()
        timing[0] = True

    def write(*_: object) -> None:
        timing[0] = False
        Path(os.environ[OUT_ENV]).write_text(json.dumps(totals))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, write)
    from imagegate.cli import main

    sys.argv = ["imagegate", "serve"]
    main()


# The driver ---------------------------------------------------------------------------


def measure(calls: int, bursts: int, size: int) -> dict[str, dict[str, list[float]]]:
    """Per scenario, the measured caller's steps: label -> [times, seconds]."""
    from compare import BURST, BURST_DELAY, launch_ready, start_upstream, stop
    from compare_targets import Imagegate

    class Timed(Imagegate):
        def server_argv(self, port: int) -> list[str]:
            return [sys.executable, __file__, "--serve"]

        def env(self, directory: Path, port: int | None = None) -> dict[str, str]:
            return super().env(directory, port) | {OUT_ENV: str(directory / "steps.json")}

    results = {}
    whole: list[float] = []
    upstream, url, _ = start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="imagegate-steps-") as work:
            target = Timed(Path(work), url)
            server, _ = launch_ready(target)
            pid, out = server.process.pid, server.directory / "steps.json"

            async def collected(run: Callable[[], Awaitable[None]]) -> Any:
                os.kill(pid, signal.SIGUSR1)
                await run()
                os.kill(pid, signal.SIGUSR2)
                for _ in range(200):  # the server writes it at once, between two events
                    if out.exists():
                        break
                    await asyncio.sleep(0.05)
                taken = json.loads(out.read_text())
                out.unlink()
                return taken

            async def scenarios() -> None:
                async with server.client("light") as light, server.client("heavy") as heavy:

                    async def small() -> None:
                        started = time.perf_counter()
                        await target.generate(light, size, server.directory)
                        whole.append(time.perf_counter() - started)

                    for _ in range(5):
                        await small()

                    async def idle() -> None:
                        for _ in range(calls):
                            await small()

                    async def burst() -> None:
                        for _ in range(bursts):
                            load = [
                                asyncio.create_task(target.generate(heavy, 1024, server.directory))
                                for _ in range(BURST)
                            ]
                            await asyncio.sleep(BURST_DELAY)
                            await small()
                            await asyncio.gather(*load)

                    for name, scenario in (("idle", idle), ("burst", burst)):
                        whole.clear()
                        by_caller = await collected(scenario)
                        # The caller's subject: its token's name, maybe with a prefix.
                        mine = [s for s in by_caller if s.rsplit(":", 1)[-1] == "light"]
                        steps = by_caller[mine[0]] if mine else {}
                        steps["the whole call (client)"] = [len(whole), sum(whole)]
                        results[name] = steps

            try:
                asyncio.run(scenarios())
            finally:
                stop(server.process)
    finally:
        upstream.terminate()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60, help="idle generations")
    parser.add_argument("--bursts", type=int, default=5, help="generations during a burst")
    parser.add_argument("--size", type=int, default=256, help="the measured call's image size")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    results = measure(args.calls, args.bursts, args.size)
    counts = {"idle": args.calls, "burst": args.bursts}
    print(f"one {args.size} px generation's steps (ms per generation; x: times per generation)")
    print(f"{'step':<34} {'idle':>16} {'during a burst':>18}")
    light = results
    labels = sorted(
        {label for steps in light.values() for label in steps},
        key=lambda label: -max(light[scenario].get(label, [0, 0])[1] for scenario in light),
    )
    for label in labels:
        cells = []
        for scenario in ("idle", "burst"):
            count, seconds = light[scenario].get(label, [0, 0])
            per = counts[scenario]
            cells.append(f"{seconds * 1000 / per:7.2f} ms {count / per:4.1f}x")
        print(f"{label:<34} {cells[0]:>16} {cells[1]:>18}")


if __name__ == "__main__":
    main()
