"""A DatomSource over a plain list of datom tuples, for unit tests of the query layer that
must not depend on replica's database (the same tests also run on real databases).

It logs the calls made to it (``calls``, ``entid_calls``) so tests can check batching.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from query.errors import QueryError
from query.source import AttrInfo, DatomTuple
from query.types import Keyword


class ListSource:
    def __init__(self, infos: Mapping[str, AttrInfo], datoms: Iterable[DatomTuple]) -> None:
        self.infos = dict(infos)
        self.datoms: list[DatomTuple] = sorted(set(datoms), key=lambda d: (d[0], d[1], d[2]))
        self.calls: list[tuple[Any, ...]] = []
        self.entid_calls = 0

    @property
    def is_history(self) -> bool:
        return False

    def attr(self, a: str) -> AttrInfo | None:
        return self.infos.get(a)

    def attrs(self) -> Sequence[str]:
        return list(self.infos)

    async def search(
        self, e: int | None = None, a: str | None = None, v: Any = None, tx: int | None = None
    ) -> Sequence[DatomTuple]:
        self.calls.append(("search", e, a, v))
        rows = [
            d
            for d in self.datoms
            if (e is None or d[0] == e)
            and (a is None or d[1] == a)
            and (v is None or d[2] == v)
            and (tx is None or d[3] == tx)
        ]
        if e is None:
            rows.sort(key=lambda d: (d[1], d[2], d[0]))  # avet order
        return rows

    async def search_es(self, a: str, es: Sequence[int]) -> Mapping[int, Sequence[DatomTuple]]:
        self.calls.append(("search_es", a, len(es)))
        wanted = set(es)
        out: dict[int, list[DatomTuple]] = {}
        for d in self.datoms:
            if d[1] == a and d[0] in wanted:
                out.setdefault(d[0], []).append(d)
        return out

    async def search_range(
        self,
        a: str,
        lo: Any = None,
        hi: Any = None,
        lo_inclusive: bool = True,
        hi_inclusive: bool = True,
    ) -> Sequence[DatomTuple]:
        raise NotImplementedError

    async def estimate(self, e: int | None = None, a: str | None = None, v: Any = None) -> int:
        return len(await self.search(e, a, v))

    async def entid(self, x: Any) -> int | None:
        self.entid_calls += 1
        if isinstance(x, bool):
            raise QueryError("not an entity id", x)
        if isinstance(x, int):
            return x if x > 0 else None
        if isinstance(x, list | tuple) and len(x) == 2:
            info = self.infos.get(x[0])
            if info is None or info.unique is None:
                raise QueryError("lookup ref attribute is not unique", x)
            found = [d[0] for d in self.datoms if d[1] == x[0] and d[2] == x[1] and d[4]]
            return found[0] if found else None
        if isinstance(x, Keyword):  # an ident (a plain string names nothing: an error)
            found = [d[0] for d in self.datoms if d[1] == "db/ident" and d[2] == x]
            return found[0] if found else None
        raise QueryError("cannot be resolved to an entity id", x)
