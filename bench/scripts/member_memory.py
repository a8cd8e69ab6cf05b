"""What a member costs the relay in Python objects, by type.

The relay core and real client sessions in one process, datagrams carried by hand
(``join_cost.Room``): a room of ``--base`` members, then ``--members`` more. Every object
reachable from the relay core (classes, modules and functions aside) is counted after each
step by ``sys.getsizeof``; the difference, per member added, is what a member holds, shared
tables' growth included. The process's resident memory is more than this (the allocator's
overhead and free lists, the cipher contexts' C memory): ``udpchat load`` reports that.

    python bench/scripts/member_memory.py --members 800

A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import sys
import types
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from join_cost import Room

_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)


def reachable(root: object) -> dict[int, object]:
    """Every object reachable from ``root``, by id, but classes, modules and code."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen


def sizes(objects: dict[int, object]) -> tuple[Counter[str], Counter[str]]:
    """Bytes and counts by type name."""
    size: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for obj in objects.values():
        name = type(obj).__name__
        size[name] += sys.getsizeof(obj)
        count[name] += 1
    return size, count


def fill(room: Room, count: int) -> None:
    """``count`` more members join, one at a time."""
    for _ in range(count):
        session, addr = room.session(f"m{room.count}")
        room.members[addr] = session
        session.connect(room.now)
        room.pump({addr})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=200, help="members before measuring")
    parser.add_argument("--members", type=int, default=800, help="members measured")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    room = Room(args.base + args.members, seed=1)
    fill(room, args.base)
    room.advance(2)
    before = sizes(reachable(room.relay))
    fill(room, args.members)
    room.advance(2)
    after = sizes(reachable(room.relay))
    added = len(room.relay.sessions.members) - args.base
    total = sum(after[0].values()) - sum(before[0].values())
    print(f"{added} members added: {total / added:,.0f} bytes of Python objects each")
    print("| type | bytes per member | objects per member |")
    print("|---|---:|---:|")
    growth = {name: after[0][name] - before[0][name] for name in after[0]}
    for name in sorted(growth, key=lambda n: -growth[n])[: args.top]:
        objects = after[1][name] - before[1][name]
        print(f"| {name} | {growth[name] / added:,.0f} | {objects / added:.2f} |")


if __name__ == "__main__":
    main()
