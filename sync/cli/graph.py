"""``replica log --graph``: the commit DAG drawn in lanes, as ``git log --graph`` does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

K = TypeVar("K")


def _line(chars: dict[int, str]) -> str:
    if not chars:
        return ""
    width = max(chars) + 1
    return "".join(chars.get(i, " ") for i in range(width))


def graph_lines(commits: Sequence[tuple[K, Sequence[K]]]) -> list[tuple[str, K | None]]:
    """Draw a commit DAG the way ``git log --graph`` does, in lanes two characters wide.

    ``commits`` are ``(id, parents)``, children before parents (newest first). Returns the
    lines: ``(drawing, id)`` for a commit's own line (``*`` in its lane) and ``(drawing,
    None)`` for the connecting lines between (``\\`` a merge opening lanes for its other
    parents, ``/`` lanes joining where two children share a parent, ``_`` a lane crossing
    over to its join)."""
    lanes: list[K | None] = []
    out: list[tuple[str, K | None]] = []

    def bars(skip: Iterable[int] = ()) -> dict[int, str]:
        hidden = set(skip)
        return {2 * i: "|" for i, lane in enumerate(lanes) if lane is not None and i not in hidden}

    for cid, parents in commits:
        if cid not in lanes:
            lanes.append(cid)
        # lanes waiting for this commit join the leftmost one, one line each
        while lanes.count(cid) > 1:
            col = lanes.index(cid)
            j = lanes.index(cid, col + 1)
            chars = bars(skip=range(j, len(lanes)))
            for x in range(2 * col + 1, 2 * j - 1, 2):
                chars[x] = "_"
            chars[2 * j - 1] = "/"
            for i in range(j + 1, len(lanes)):
                if lanes[i] is not None:
                    chars[2 * i - 1] = "/"
            lanes.pop(j)
            out.append((_line(chars), None))
        col = lanes.index(cid)
        extra = len(parents) - 1
        right = len(lanes) - col - 1
        if extra >= 2 and right:
            # an octopus merge: move the lanes on its right out of the way first
            for _ in range(extra - 1):
                chars = bars(skip=range(col + 1, len(lanes)))
                for i in range(col + 1, len(lanes)):
                    if lanes[i] is not None:
                        chars[2 * i + 1] = "\\"
                lanes.insert(col + 1, None)
                out.append((_line(chars), None))
        elif extra >= 2:
            lanes[col + 1 : col + 1] = [None] * (extra - 1)
        chars = bars()
        chars[2 * col] = "*"
        for m in range(1, extra):
            chars[2 * col + 2 * m - 1] = "-"
            chars[2 * col + 2 * m] = "."
        out.append((_line(chars), cid))
        if not parents:
            lanes.pop(col)
            if any(lane is not None for lane in lanes[col:]):
                chars = bars(skip=range(col, len(lanes)))
                for i in range(col, len(lanes)):
                    if lanes[i] is not None:
                        chars[2 * i + 1] = "/"
                out.append((_line(chars), None))
            continue
        rest = lanes[col + max(extra, 1) :]
        lanes[col:] = [parents[0], *parents[1:], *rest]
        if extra >= 1:
            chars = bars(skip=range(col + 1, len(lanes)))
            for m in range(1, extra + 1):
                chars[2 * col + 2 * m - 1] = "\\"
            for i in range(col + extra + 1, len(lanes)):
                if lanes[i] is not None:
                    chars[2 * i - 1] = "\\"
            out.append((_line(chars), None))
    return out
