"""Run the benchmarks and write their sections into BENCHMARKS.md.

Usage: python bench/run.py [NAME ...]   (default: every bench/bench_NAME.py)

Each bench/bench_NAME.py defines `run(work: pathlib.Path) -> str`, which measures Tunery side
by side with its baseline in one process tree on this machine and returns a Markdown section.
Sections are replaced in place, so running one benchmark keeps the others' last numbers.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
OUT = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\nWritten by `make bench` (`python bench/run.py [NAME]`). Ratios matter more than absolute numbers: these machines are noisy.\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    OUT.write_text(text)


def main(names: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))
    names = names or available
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"bench_{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== bench {name}", flush=True)
        started = time.time()
        body = module.run(WORK / name)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        header = f"## {name}\n\nMachine: {machine()}. Run {stamp} with `make bench BENCH={name}` ({time.time() - started:.0f} s).\n\n"
        write_section(name, header + body)
        print(body, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
