"""The mapping step on its own: microseconds per message, per shipped profile.

    .venv/bin/python bench/mapping.py [--messages 2000] [--rounds 5]

For each golden case the shipped mappings accept (mappings/cases/<profile>/),
the message is decoded and tokenized ``--messages`` times up front (fresh
Message objects: the tokenizer caches split fields per object, and a message
reaches the mapping only once), then ``MappingSet.map`` is timed over all of
them. The figure is the median of ``--rounds`` rounds. Routing over all four
shipped mappings is included, as in the daemon; tokenizing is printed apart for
scale. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO
from bridge.hl7 import decode_frame, parse_message, split_messages
from bridge.mapping import MappingError, load_mappings
from bridge.mapping.cases import CASES_FOLDER, discover

MAPPINGS = REPO / "mappings"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages per case and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    started = time.perf_counter()
    mappings = load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")
    load_ms = (time.perf_counter() - started) * 1000
    print(f"Python {sys.version.split()[0]}; {len(mappings.names)} mappings loaded in "
          f"{load_ms:.0f} ms; {args.messages} messages x {args.rounds} rounds per case\n")
    header = (f"{'profile / case':52} {'items':>5} {'attrs':>5} {'tokenize µs':>11} "
              f"{'map µs/msg':>10} {'µs/item':>8}")
    print(header)
    print("-" * len(header))
    per_profile: dict[str, list[float]] = defaultdict(list)
    for case in discover([MAPPINGS / CASES_FOLDER]):
        [frame] = split_messages(case.message.read_bytes())
        text = decode_frame(frame, default="ascii", aliases={}).text
        try:
            result = mappings.map(parse_message(text))
        except MappingError:
            continue  # rejections are not the hot path
        items = len(result.steps)
        attrs = sum(_count(ds) for ds in result.items) // items
        tokenize, mapping = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter_ns()
            batch = [parse_message(text) for _ in range(args.messages)]
            t1 = time.perf_counter_ns()
            for message in batch:
                mappings.map(message)
            t2 = time.perf_counter_ns()
            tokenize.append((t1 - t0) / args.messages / 1000)
            mapping.append((t2 - t1) / args.messages / 1000)
        us = statistics.median(mapping)
        per_profile[result.mapping].append(us / items)
        label = f"{result.mapping} / {case.stem}"
        print(f"{label:52} {items:>5} {attrs:>5} {statistics.median(tokenize):>11.0f} "
              f"{us:>10.0f} {us / items:>8.0f}")
    print("\nper profile, µs per worklist item (median over its cases):")
    for name, values in per_profile.items():
        print(f"  {name:24} {statistics.median(values):6.0f} µs/item "
              f"-> {1e6 / statistics.median(values):8.0f} items/s on one core")
    return 0


def _count(ds: object) -> int:
    """Attributes in an item, sequence items included."""
    n = 0
    for elem in ds:  # type: ignore[attr-defined]
        n += 1
        if elem.VR == "SQ":
            n += sum(_count(item) for item in elem.value)
    return n


if __name__ == "__main__":
    sys.exit(main())
