"""imagegate against its closest competitor, image-generation-mcp 1.12.1, side by side.

Both servers run as real processes on 127.0.0.1 against the same zero-latency fake
OpenAI Images upstream (bench/fake_images_upstream.py), which answers every image
request with a noisy PNG of 256, 1024 or 2048 px (0.2, 3.1, 12.6 MB). Rounds alternate:
direct (a plain httpx POST + read of the same answer: the floor), imagegate,
competitor, direct, imagegate, ... and each figure is the median over the rounds.
The table's ratio is imagegate / competitor. What each server does and how a
generation counts as done is in compare_targets.py.

Without the competitor (install it with `make bench-competitor`), imagegate's
figures are printed alone. The machine's load average is printed with the figures:
other work on the machine moves them.

    .venv/bin/python bench/compare.py [--rounds 4] [--calls 8] [--quick] [--keep DIR]
"""

import argparse
import asyncio
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

sys.path.insert(0, str(Path(__file__).parent))

from common import cpu_seconds, free_port, median, peak_rss_mib, reset_peak_rss, rss_mib
from compare_targets import COMPETITOR_VERSION, Competitor, Imagegate, Target, prompt

SIDES = (256, 1024, 2048)
CONCURRENT = 64
BURST = 16
BURST_DELAY = 0.05
"""The small call starts this long after the burst's calls were sent."""
RSS_IMAGES = 8
POLL_INTERVAL = 0.010
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "imagegate-compare", "version": "1"},
    },
}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}

Figures = dict[str, float]


@dataclass
class Settings:
    rounds: int
    calls: int
    burst_trials: int
    probes: int
    cli_runs: int


@dataclass
class Running:
    target: Target
    base: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def mcp(self) -> str:
        return self.base + self.target.mcp_path

    def client(self, caller: str = "main") -> Client:
        return Client(self.mcp, auth=BearerAuth(self.target.token(caller)), timeout=300)


# Starting and stopping -----------------------------------------------------------------


def start_upstream() -> tuple[subprocess.Popen[bytes], str, dict[int, int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fake_images_upstream.py")), str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            sizes = httpx.get(f"{url}/bench/png-bytes", timeout=1).json()
            return process, url, {int(side): int(size) for side, size in sizes.items()}
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the fake upstream did not start")


def launch_ready(target: Target) -> tuple[Running, float]:
    """A fresh server process; returns it with its ready time: from launch to the first
    successful authenticated answer (an MCP `initialize` with the bearer token)."""
    directory = target.fresh_directory()
    port = free_port()
    started = time.perf_counter()
    process = target.launch(port, directory)
    base = f"http://127.0.0.1:{port}"
    headers = MCP_HEADERS | {"authorization": f"Bearer {target.token('main')}"}
    with httpx.Client(timeout=5) as http:
        while True:
            if process.poll() is not None:
                log = (directory / "server.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{target.name} exited with {process.returncode}:\n{log}")
            try:
                answer = http.post(base + target.mcp_path, json=INITIALIZE, headers=headers)
                if answer.status_code == 200:
                    return Running(target, base, process, directory), time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 120:
                stop(process)
                raise SystemExit(f"{target.name} was not ready within 120 s")
            time.sleep(0.01)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_servers(targets: list[Target]) -> Iterator[dict[str, Running]]:
    servers: dict[str, Running] = {}
    try:
        for target in targets:
            servers[target.name], _ = launch_ready(target)
        yield servers
    finally:
        for server in servers.values():
            stop(server.process)


# Measurements --------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return ms(time.perf_counter() - started)


async def fetch_direct(http: httpx.AsyncClient, upstream: str, px: int) -> None:
    """One image's answer from the fake upstream, fetched and read by plain httpx."""
    body = {"prompt": prompt(px), "size": f"{px}x{px}", "model": "gpt-image-1.5"}
    answer = await http.post(f"{upstream}/v1/images/generations", json=body)
    answer.raise_for_status()
    await answer.aread()


async def direct_round(upstream: str, settings: Settings) -> Figures:
    """The floor: the fake upstream's answer fetched and read by a plain httpx client."""
    figures: Figures = {}
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def fetch(px: int) -> None:
            await fetch_direct(http, upstream, px)

        for px in SIDES:
            await fetch(px)
            times = [await timed(lambda px=px: fetch(px)) for _ in range(settings.calls)]
            figures[f"call_{px}"] = median(times)
        started = time.perf_counter()
        await asyncio.gather(*(fetch(1024) for _ in range(CONCURRENT)))
        figures["throughput"] = CONCURRENT / (time.perf_counter() - started)
    return figures


async def sequential(server: Running, settings: Settings) -> Figures:
    target, figures = server.target, {}
    async with server.client() as client:
        for px in SIDES:
            times = [
                await timed(lambda px=px: target.generate(client, px, server.directory))
                for _ in range(settings.calls)
            ]
            figures[f"call_{px}"] = median(times)
        polled = [
            await timed(
                lambda: target.generate_polled(client, 1024, server.directory, POLL_INTERVAL)
            )
            for _ in range(settings.calls)
        ]
        figures["polled_1024"] = median(polled)
        await target.server_info(client)
        info = [await timed(lambda: target.server_info(client)) for _ in range(settings.probes)]
        figures["server_info"] = median(info)
    return figures


async def probes(server: Running, settings: Settings) -> Figures:
    """Idle /healthz and an unauthenticated MCP request (keep-alive connection)."""
    figures: Figures = {}
    async with httpx.AsyncClient(timeout=10) as http:
        if server.target.healthz is not None:
            url = server.base + server.target.healthz
            await http.get(url)
            times = []
            for _ in range(settings.probes):
                started = time.perf_counter()
                answer = await http.get(url)
                times.append(ms(time.perf_counter() - started))
                if answer.status_code != 200:
                    raise RuntimeError(f"{url}: {answer.status_code}")
            figures["healthz"] = median(times)
        times = []
        for _ in range(settings.probes + 1):
            started = time.perf_counter()
            answer = await http.post(server.mcp, json=INITIALIZE, headers=MCP_HEADERS)
            times.append(ms(time.perf_counter() - started))
            if answer.status_code != 401:
                raise RuntimeError(f"unauthenticated request answered {answer.status_code}")
        figures["unauthenticated"] = median(times[1:])
    return figures


async def burst(server: Running, settings: Settings) -> Figures:
    """One 256 px call by one caller while another caller's 16 x 1024 px are under way.
    Its floor: the same image fetched straight from the upstream during the same burst
    (which the one fake upstream serves too: its 48 MB are in the way). Then bursts
    alone, for the server's CPU time per call (/proc: its main thread, the event loop,
    and all its threads)."""
    target = server.target
    async with (
        server.client("light") as light,
        server.client("heavy") as heavy,
        httpx.AsyncClient(timeout=60) as http,
    ):
        idle = [
            await timed(lambda: target.generate(light, 256, server.directory))
            for _ in range(settings.calls)
        ]

        async def during_burst(small: Callable[[], Awaitable[object]]) -> tuple[float, int, int]:
            """`small`'s time, and how many burst calls ran as it began and had ended
            when it answered."""
            calls = [
                asyncio.create_task(target.generate(heavy, 1024, server.directory))
                for _ in range(BURST)
            ]
            await asyncio.sleep(BURST_DELAY)
            running = sum(not call.done() for call in calls)
            took = await timed(small)
            finished = sum(call.done() for call in calls)
            await asyncio.gather(*calls)
            return took, running, finished

        trials = [
            await during_burst(lambda: target.generate(light, 256, server.directory))
            for _ in range(settings.burst_trials)
        ]
        loaded = [took for took, _, _ in trials]
        running = [ran for _, ran, _ in trials]
        finished = [ended for _, _, ended in trials]
        floor = [
            (await during_burst(lambda: fetch_direct(http, target.upstream, 256)))[0]
            for _ in range(settings.burst_trials)
        ]
        # What one call of the burst costs the server: its event loop's share is what
        # every other caller waits behind.
        loop_before, all_before = cpu_seconds(server.process.pid)
        for _ in range(settings.burst_trials):
            await asyncio.gather(
                *(target.generate(heavy, 1024, server.directory) for _ in range(BURST))
            )
        loop_after, all_after = cpu_seconds(server.process.pid)
        calls = settings.burst_trials * BURST
    return {
        "burst_loop_cpu": (loop_after - loop_before) / calls * 1000,
        "burst_all_cpu": (all_after - all_before) / calls * 1000,
        "burst_floor": median(floor),
        "burst_idle": median(idle),
        "burst_small": median(loaded),
        "burst_ratio": median(loaded) / median(idle),
        "burst_running_at_start": median(running),
        "burst_finished_before": median(finished),
    }


async def throughput(server: Running) -> Figures:
    """64 callers, connected first, each make one 1024 px image at the same moment."""
    target = server.target
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(server.client(f"caller-{n}")) for n in range(CONCURRENT)
        ]
        started = time.perf_counter()
        await asyncio.gather(
            *(target.generate(client, 1024, server.directory) for client in clients)
        )
        elapsed = time.perf_counter() - started
    return {"throughput": CONCURRENT / elapsed}


async def memory(server: Running, png_bytes: int) -> Figures:
    """Peak RSS growth while 8 callers each have one 2048 px image in flight (from the
    RSS just before: a heap that grew earlier and was freed is reused, not counted)."""
    target, pid = server.target, server.process.pid
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(server.client(f"caller-{n}")) for n in range(RSS_IMAGES)
        ]
        before = rss_mib(pid)
        reset_peak_rss(pid)
        if peak_rss_mib(pid) > rss_mib(pid) + 2:
            return {}  # the peak could not be reset (no right to /proc/<pid>/clear_refs)
        await asyncio.gather(
            *(target.generate(client, 2048, server.directory) for client in clients)
        )
        growth = (peak_rss_mib(pid) - before) / RSS_IMAGES
    return {
        "rss_before": before,
        "rss_per_image": growth,
        "rss_fraction": growth / (png_bytes / 2**20),
    }


def stdio_first_answer(target: Target) -> float:
    """Seconds from launching the stdio server to its answer to `initialize`."""
    directory = target.fresh_directory()
    log = (directory / "server.log").open("ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        target.stdio_argv(),
        env=target.env(directory),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=directory,
    )
    log.close()
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        process.stdin.flush()
        deadline = started + 60
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1)
            if not ready:
                continue
            line = process.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("id") == 1:
                if "result" not in message:
                    raise RuntimeError(f"{target.name} stdio initialize: {message}")
                return time.perf_counter() - started
        raise RuntimeError(f"{target.name} gave no stdio answer to initialize")
    finally:
        process.stdin.close()
        stop(process)


def cli_times(target: Target, settings: Settings) -> Figures:
    """Each command's wall time with compiled bytecode, as installed: the packages ship
    it (packaging/build.sh runs compileall) and pip's installs write it on first use.
    A machine that sets PYTHONDONTWRITEBYTECODE (this one does) would otherwise time
    the compiling of every module at each run. One untimed run writes the cache."""
    directory = target.fresh_directory()
    env = {k: v for k, v in target.env(directory).items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
    figures: Figures = {}
    for label, argv in target.cli().items():
        subprocess.run(argv, env=env, capture_output=True, check=False, cwd=directory)
        times = []
        for _ in range(settings.cli_runs):
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, check=False, cwd=directory)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr[-500:]!r}")
        figures[f"cli {label}"] = median(times)
    return figures


def target_round(server: Running, settings: Settings, png_bytes: dict[int, int]) -> Figures:
    figures: Figures = {}
    figures |= asyncio.run(sequential(server, settings))
    figures |= asyncio.run(probes(server, settings))
    figures |= asyncio.run(burst(server, settings))
    figures |= asyncio.run(throughput(server))
    figures |= fresh_server(server.target, png_bytes[2048])
    figures["stdio"] = stdio_first_answer(server.target)
    figures |= cli_times(server.target, settings)
    return figures


def fresh_server(target: Target, png_bytes: int) -> Figures:
    """Ready time, and memory on a fresh server warmed by one call per size: the long
    running one keeps what the concurrent figures made its heap grow to, so its peak
    would say little about one more image in flight."""
    fresh, ready = launch_ready(target)
    try:
        asyncio.run(warm_up(fresh))
        return {"ready": ready} | asyncio.run(memory(fresh, png_bytes))
    finally:
        stop(fresh.process)


async def warm_up(server: Running) -> None:
    async with server.client() as client:
        for px in SIDES:
            await server.target.generate(client, px, server.directory)


async def describe(server: Running) -> str:
    async with server.client() as client:
        return await server.target.describe(client, server.directory)


# The table -----------------------------------------------------------------------------


def medians(rounds: list[Figures]) -> Figures:
    keys = {key for figures in rounds for key in figures}
    return {key: median([f[key] for f in rounds if key in f]) for key in keys}


def with_added(figures: Figures, direct: Figures) -> Figures:
    out = dict(figures)
    for px in SIDES:
        out[f"added_{px}"] = figures[f"call_{px}"] - direct[f"call_{px}"]
    return out


@dataclass
class Row:
    label: str
    key: str
    unit: str
    goal: str = ""
    check: Callable[[float, float | None], bool] | None = None
    digits: int = 1


def cost_per_mb(figures: Figures, png: dict[int, int]) -> float:
    return (figures["added_2048"] - figures["added_1024"]) / ((png[2048] - png[1024]) / 1e6)


def rows(png: dict[int, int], direct: Figures) -> list[Row]:
    image_mib = png[2048] / 2**20
    return [
        Row("added latency p50 at 256 px", "added_256", "ms", "<= 10 ms", lambda i, c: i <= 10),
        Row(
            "added latency p50 at 1024 px",
            "added_1024",
            "ms",
            "<= 0.5x competitor",
            lambda i, c: c is not None and i <= 0.5 * c,
        ),
        Row("added latency p50 at 2048 px", "added_2048", "ms"),
        Row(
            "cost per MB (slope 1024 -> 2048 px)",
            "cost_per_mb",
            "ms/MB",
            "<= 8 ms/MB",
            lambda i, c: i <= 8,
        ),
        *(
            Row(f"  call p50 at {px} px (direct {direct[f'call_{px}']:.1f} ms)", f"call_{px}", "ms")
            for px in SIDES
        ),
        Row("  call p50 at 1024 px, client polls status /10 ms", "polled_1024", "ms"),
        Row(
            f"64 concurrent at 1024 px (direct {direct['throughput']:.0f}/s)",
            "throughput",
            "img/s",
            ">= 1.3x competitor",
            lambda i, c: c is not None and i >= 1.3 * c,
        ),
        Row("256 px call during a 16 x 1024 px burst", "burst_small", "ms"),
        Row("  same call idle (another caller's session)", "burst_idle", "ms"),
        Row("  the upstream alone for it, during the same burst", "burst_floor", "ms"),
        Row(
            "  small call during burst / idle",
            "burst_ratio",
            "x",
            "<= 3x idle",
            lambda i, c: i <= 3,
            2,
        ),
        Row("server CPU per 1024 px call of the burst: event loop", "burst_loop_cpu", "ms"),
        Row("  all threads", "burst_all_cpu", "ms"),
        Row("idle /healthz p50", "healthz", "ms"),
        Row("unauthenticated request p50 (401)", "unauthenticated", "ms"),
        Row("authenticated server_info tool call p50", "server_info", "ms"),
        Row("peak RSS growth per in-flight 2048 px image", "rss_per_image", "MiB"),
        Row(
            f"  RSS growth / image size ({image_mib:.1f} MiB)",
            "rss_fraction",
            "",
            "<= 0.5",
            lambda i, c: i <= 0.5,
            2,
        ),
        Row("ready time (launch -> 1st authenticated answer)", "ready", "s", digits=2),
        Row("CLI --version", "cli --version", "s", "< 0.3 s", lambda i, c: i < 0.3, 2),
        Row("CLI check-config", "cli check-config", "s", "< 0.3 s", lambda i, c: i < 0.3, 2),
        Row("CLI --help", "cli --help", "s", digits=2),
        Row("stdio: launch -> initialize answered", "stdio", "s", "< 1 s", lambda i, c: i < 1, 2),
    ]


def cell(value: float | None, unit: str, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} {unit}".strip()


def print_table(
    ours: Figures, theirs: Figures | None, png: dict[int, int], direct: Figures
) -> list[str]:
    misses = []
    widths = (50, 13, 13, 7, 27)
    header = ("figure", "imagegate", "competitor", "ratio", "goal")
    print("  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows(png, direct):
        mine = ours.get(row.key)
        other = theirs.get(row.key) if theirs is not None else None
        ratio = f"{mine / other:.2f}x" if mine is not None and other else ""
        verdict = ""
        if row.check is not None and mine is not None:
            relative = "competitor" in row.goal
            if relative and theirs is None:
                verdict = "(no competitor)"
            else:
                met = row.check(mine, other)
                verdict = "met" if met else "MISSED"
                if not met:
                    misses.append(f"{row.label.strip()} ({row.goal})")
        goal = f"{row.goal}: {verdict}" if row.goal else ""
        cells = (
            row.label,
            cell(mine, row.unit, row.digits),
            cell(other, row.unit, row.digits) if theirs is not None else "-",
            ratio,
            goal,
        )
        print(
            f"{cells[0]:<{widths[0]}}  {cells[1]:>{widths[1]}}  {cells[2]:>{widths[2]}}  "
            f"{cells[3]:>{widths[3]}}  {cells[4]}"
        )
    return misses


@contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="imagegate-compare-") as tmp:
        yield Path(tmp)


def imagegate_version() -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("imagegate")), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip().split()[-1] if done.returncode == 0 else "unknown"


def tree_state() -> str:
    """The commit measured, and how many files under src/ differ from it."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}, {len(changed)} files under src/ changed in the working tree"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def server_log_problems(work: Path) -> list[str]:
    """Each server log's ERROR lines, counted by message."""
    problems = []
    for log in sorted(work.glob("*/server.log")):
        errors = Counter(
            line.split("ERROR", 1)[1].strip()[:120]
            for line in log.read_text(errors="replace").splitlines()
            if line.startswith("ERROR") or " ERROR " in line
        )
        problems += [
            f"{log.parent.name}: {count} x ERROR {message}" for message, count in errors.items()
        ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=8, help="sequential calls per size")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument(
        "--no-competitor", action="store_true", help="imagegate alone even if installed"
    )
    parser.add_argument(
        "--keep", type=Path, help="work in this new directory and keep it (server logs, images)"
    )
    args = parser.parse_args()
    settings = Settings(
        rounds=args.rounds,
        calls=3 if args.quick else args.calls,
        burst_trials=1 if args.quick else 3,
        probes=10 if args.quick else 30,
        cli_runs=2 if args.quick else 5,
    )
    competitor = Competitor.installed() and not args.no_competitor

    with work_directory(args.keep) as work:
        upstream, upstream_url, png = start_upstream()
        try:
            targets: list[Target] = [Imagegate(work, upstream_url)]
            if competitor:
                targets.append(Competitor(work, upstream_url))
            load_start = load()
            direct_rounds: list[Figures] = []
            results: dict[str, list[Figures]] = {t.name: [] for t in targets}
            with running_servers(targets) as servers:
                for server in servers.values():
                    asyncio.run(warm_up(server))
                returns = {name: asyncio.run(describe(s)) for name, s in servers.items()}
                for number in range(1, settings.rounds + 1):
                    direct = asyncio.run(direct_round(upstream_url, settings))
                    direct_rounds.append(direct)
                    for target in targets:
                        figures = target_round(servers[target.name], settings, png)
                        results[target.name].append(with_added(figures, direct))
                    print(f"round {number}/{settings.rounds} done, load {load()}", file=sys.stderr)
            load_end = load()
        finally:
            stop(upstream)
        problems = server_log_problems(work)

    direct = medians(direct_rounds)
    final = {name: medians(rounds) for name, rounds in results.items()}
    for figures in final.values():
        figures["cost_per_mb"] = cost_per_mb(figures, png)

    sizes = ", ".join(f"{side} px {png[side] / 1e6:.2f} MB" for side in SIDES)
    against = f"vs image-generation-mcp {Competitor.version()}" if competitor else "alone"
    print(
        f"imagegate {against}: {settings.rounds} alternating rounds, medians; "
        f"{settings.calls} sequential calls per size and round; PNG {sizes}"
    )
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"(1/5/15 min) {load_start} at start, {load_end} at end"
    )
    print(f"imagegate {imagegate_version()}, {tree_state()}")
    print(
        "added = call p50 - direct p50 (a plain httpx POST + read of the same upstream "
        "answer); ratio = imagegate / competitor"
    )
    print()
    misses = print_table(final["imagegate"], final.get("competitor"), png, direct)
    print()
    if not competitor:
        print(
            "competitor not measured: install it with `make bench-competitor` "
            f"(bench/competitor/install.sh: image-generation-mcp=={COMPETITOR_VERSION} into "
            "bench/.competitor-venv)"
        )
    for name, text in returns.items():
        print(f"{name} returns: {text}")
    for name, figures in final.items():
        print(
            f"{name} burst: {figures['burst_running_at_start']:.0f} of {BURST} burst calls "
            f"still running when the small call started, "
            f"{figures['burst_finished_before']:.0f} finished before it answered"
        )
    for name, rounds in results.items():
        if not any("rss_per_image" in r for r in rounds):
            print(f"note: {name}'s peak RSS could not be reset; no memory figure")
    for problem in problems:
        print(f"server log: {problem}")
    print(f"goals missed: {', '.join(misses) if misses else 'none'}")


if __name__ == "__main__":
    main()
