"""Positions: where a request sits in the log, given to clients as an opaque token."""

from __future__ import annotations

import re
from typing import NamedTuple

from ledger.errors import InvalidRequest

_TOKEN = re.compile(r"([0-9]{1,9})-([0-9]{1,19})", re.ASCII)


class Position(NamedTuple):
    """A record's partition and offset in `ledger.transactions`; ordered by (partition, offset).

    A NamedTuple for the same reason as `Entry`: several are made per request the projector decides.
    """

    partition: int
    offset: int

    def token(self) -> str:
        return f"{self.partition}-{self.offset}"


def parse_token(token: str) -> Position:
    """The position a client echoes back, or `InvalidRequest` for anything this ledger never issued."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidRequest("not a position token", "min_position")
    return Position(int(match[1]), int(match[2]))
