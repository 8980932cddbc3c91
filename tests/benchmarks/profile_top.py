"""The top of a py-spy profile: where a measured child spent its CPU.

    python tests/benchmarks/profile_top.py PROFILE.txt [--top 10]

Reads py-spy's raw output (``py-spy record --format raw``: one line per distinct stack,
frames joined by ``;``, then the number of samples) and prints the functions that were
on the CPU most, by their own samples (the frame at the top of the stack) and by the
samples of every stack they were part of. py-spy is not a dependency of syncd: the
benchmarks use it when it is installed (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A frame as py-spy writes it: "function (path/to/file.py:123)"; the line is dropped so
# that one function's lines count together.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>.*?)(?::\d+)?\)$")
# Where a thread waits rather than works, though py-spy counted it busy: an idle worker
# of the database thread pool (its work shows as deeper frames), the event loop waiting
# for the network. Stacks ending here are left out of the figures.
IDLE = frozenset({"_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)"})


def function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    if "/syncd/" in file:
        file = "syncd/" + file.rsplit("/syncd/", 1)[1]
    return f"{match['name']} ({file})"


def read(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """(own samples, inclusive samples, total samples) per function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [function(f) for f in stack.split(";") if f]
        if not frames or frames[-1] in IDLE:
            continue
        total += samples
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    return own, inclusive, total


def report(path: Path, top: int = 10) -> str:
    own, inclusive, total = read(path)
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples at work", f"  top {top} by own time:"]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines.append(f"  top {top} syncd functions by inclusive time:")
    ours = [(name, n) for name, n in inclusive.most_common() if "(syncd/" in name]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(report(args.profile, args.top))


if __name__ == "__main__":
    main()
