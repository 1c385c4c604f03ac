"""The journal's hash chain: a tamper-evident trail of what arrived when.

Rules:
- Each journal row's ``chain_hash`` is ``SHA-256(previous chain_hash || encoding(row))`` where
  the row is the tuple of fields the journal inserts (``receiver.store.signal_rows``'s
  ``SIGNAL_COLUMNS``, in that order) and the previous hash is that of the node's previous row in
  ``seq`` order; the first row of a chain follows ``GENESIS`` (32 zero bytes), or the anchor
  retention left in ``journal_chain``.
- The encoding is canonical and simple to re-implement elsewhere (a court expert's script):
  per field, ``n`` for NULL, ``i<decimal>;`` for an integer, ``s<length>:<UTF-8 bytes>`` for
  text, ``b<length>:<bytes>`` for a blob (lengths in bytes, decimal).
- The counters a retry updates later (``repeats``, ``last_repeat_us``) are not covered: they
  change after the commit by design. Everything stored at the commit is.
- The chain is computed by the journal's writer inside the commit (:func:`chain_rows`); its
  head moves only once that commit succeeded. Nothing else writes signal rows. SQLite reads
  the head under its write lock (``receiver/store/chain_sql.py`` ``chain_head``); PostgreSQL
  under the journal's advisory lock, in the append's transaction (``CHAIN_HEAD`` in
  ``receiver/store/postgres/store.py``), so writers on every node extend one chain in seq order.
- :func:`verify_chain` is the one verifier; each backend supplies what it reads
  (:class:`ChainReader`: ``receiver/store/chain_sql.py``, ``postgres/chain_sql.py``) in one
  read snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from receiver.store.signal_rows import SIGNAL_COLUMNS

GENESIS = bytes(32)
NODE = ""  # the single-node SQLite store's chain


def encode_row(row: Sequence[Any]) -> bytes:
    """The canonical encoding of one row's fields (see the module's rules)."""
    kinds = tuple(map(type, row))
    encoder = _encoders.get(kinds)
    if encoder is None:
        encoder = _encoders[kinds] = _shape_encoder(kinds)
    return encoder(row)


def _encode_fields(row: Sequence[Any]) -> bytes:
    """The encoding field by field: the definition, for any row."""
    parts: list[bytes] = []
    add = parts.append
    for value in row:
        kind = value.__class__
        if kind is str:
            data = value.encode("utf-8")
            add(b"s%d:" % len(data))
            add(data)
        elif value is None:
            add(b"n")
        elif kind is int:
            add(b"i%d;" % value)
        else:  # a blob (bytes from us, bytes or memoryview from SQLite)
            data = bytes(value)
            add(b"b%d:" % len(data))
            add(data)
    return b"".join(parts)


# Rows of one shape (the class of each field) share an encoder made for that shape: one
# f-string per run of text, integer and NULL fields, instead of a loop that tests each field's
# class and joins a part per field (the chain was half the commit thread's time). A text field's
# ``s<length>:`` comes from a table of prefixes (a %-format or f-string of each length made and
# freed a small string per field: about 40% of the encoder). Shapes are few (which fields are
# NULL); past the limit, or for a field of another class, the field-by-field definition serves.
_SHAPES_MAX = 512
_encoders: dict[tuple[type, ...], Callable[[Sequence[Any]], bytes]] = {}
_PREFIXES = 1024  # text and blob lengths with a ready prefix; a longer field: the definition
_TEXT_PREFIX = tuple(f"s{n}:" for n in range(_PREFIXES))
_BLOB_PREFIX = tuple(b"b%d:" % n for n in range(_PREFIXES))


def _shape_encoder(kinds: tuple[type, ...]) -> Callable[[Sequence[Any]], bytes]:
    """An encoder for rows of this shape: each run of text, integer and NULL fields is one
    f-string encoded once (a text field's UTF-8 length is its length when the run is ASCII; a
    run that is not, or a field longer than the prefix tables, falls back to the definition),
    each blob goes in as it is."""
    if len(_encoders) >= _SHAPES_MAX or not set(kinds) <= {str, int, type(None), bytes}:
        return _encode_fields
    runs: list[list[str]] = [[]]  # per run of non-blob fields: its f-string's parts
    blobs: list[int] = []  # the blob fields' indexes, one between each pair of runs
    for i, kind in enumerate(kinds):
        if kind is str:
            runs[-1].append(f"{{S[len(f{i})]}}{{f{i}}}")
        elif kind is int:
            runs[-1].append(f"i{{f{i}}};")
        elif kind is bytes:
            blobs.append(i)
            runs.append([])
        else:
            runs[-1].append("n")
    lines = ["def encode(row):"]
    if kinds:
        lines.append(f"    {', '.join(f'f{i}' for i in range(len(kinds)))}, = row")
    lines.append("    try:")
    for n, parts in enumerate(runs):
        lines.append(f"        t{n} = f{''.join(parts)!r}")
    pieces = ["t0.encode()"]
    for n, i in enumerate(blobs, start=1):
        pieces += [f"B[len(f{i})]", f"f{i}", f"t{n}.encode()"]
    if blobs:
        lines.append(f"        blob_prefixes = ({''.join(p + ', ' for p in pieces[1::3])})")
    lines.append("    except IndexError:")
    lines.append("        return fields(row)")
    ascii_check = " and ".join(f"t{n}.isascii()" for n in range(len(runs)))
    lines.append(f"    if not ({ascii_check}):")
    lines.append("        return fields(row)")
    joined = ["t0.encode()"]
    for n, i in enumerate(blobs, start=1):
        joined += [f"blob_prefixes[{n - 1}]", f"f{i}", f"t{n}.encode()"]
    lines.append(f"    return b''.join(({', '.join(joined)},))")
    namespace: dict[str, Any] = {"fields": _encode_fields, "S": _TEXT_PREFIX, "B": _BLOB_PREFIX}
    exec(compile("\n".join(lines) + "\n", "<chain encoder>", "exec"), namespace)  # noqa: S102
    encoder: Callable[[Sequence[Any]], bytes] = namespace["encode"]
    return encoder


def chain_rows(rows: Sequence[tuple[Any, ...]], head: bytes) -> tuple[list[tuple[Any, ...]], bytes]:
    """The rows with their chain hash appended, and the new head (the last row's hash)."""
    chained: list[tuple[Any, ...]] = []
    add = chained.append
    sha256 = hashlib.sha256
    shape_of = _encoders.get
    for row in rows:
        encoder = shape_of(tuple(map(type, row)))
        data = encode_row(row) if encoder is None else encoder(row)
        head = sha256(head + data).digest()
        add((*row, head))
    return chained, head


@attrs.frozen
class Mismatch:
    """The first row whose stored hash is not what its fields and predecessor give."""

    seq: int
    id: str
    received_us: int
    node: str
    reason: str


@attrs.frozen
class Verification:
    verified: int
    unchained: int  # rows stored before the chain existed (chain_hash NULL), not covered
    first_seq: int | None
    last_seq: int | None
    mismatch: Mismatch | None = None


class ChainReader(Protocol):
    """What verification reads, per backend (``receiver/store/chain_sql.py`` for SQLite,
    ``receiver/store/postgres/chain_sql.py``), inside one read snapshot."""

    def anchors(self) -> Iterable[tuple[str, int, bytes | None]]:
        """(node, anchor seq, anchor hash) retention left in ``journal_chain``."""
        ...

    def rows(self, since_us: int | None) -> Iterable[Sequence[Any]]:
        """``(seq, node, chain_hash, *SIGNAL_COLUMNS)`` in ``seq`` order; with ``since_us``
        from the first row received then."""
        ...

    def before(self, node: str, seq: int) -> tuple[int, bytes | None] | None:
        """The node's row just before ``seq``: (its seq, its chain hash)."""
        ...


def verify_chain(reader: ChainReader, *, since_us: int | None = None) -> Verification:
    """Recompute every chain in ``seq`` order; stop at the first row that does not match.

    The hashed fields are ``SIGNAL_COLUMNS``, as every backend's journal inserts them. With
    ``since_us`` the walk starts at the first row received then, trusting the hash of the row
    before it.
    """
    heads: dict[str, bytes] = {}  # per node: the hash its next row must follow
    previous: dict[str, int] = {}  # per node: seq of its previous row (or anchor)
    chained: set[str] = set()  # nodes whose chain has begun: a NULL hash now is tampering
    for node, anchor_seq, anchor_hash in reader.anchors():
        heads[node] = bytes(anchor_hash) if anchor_hash is not None else GENESIS
        previous[node] = int(anchor_seq)
        if anchor_hash is not None:
            chained.add(node)
    verified = unchained = 0
    first: int | None = None
    last: int | None = None
    seen: set[str] = set()
    for row in reader.rows(since_us):
        seq, node, stored = int(row[0]), str(row[1]), row[2]
        if since_us is not None and node not in seen:
            before = reader.before(node, seq)
            if before is not None:
                previous[node] = int(before[0])
                if before[1] is not None:
                    heads[node] = bytes(before[1])
                    chained.add(node)
        seen.add(node)
        first = seq if first is None else first
        last = seq
        if stored is None:
            if node in chained:
                return _failed(row, node, "its chain hash was removed", verified, unchained)
            unchained += 1
            previous[node] = seq
            continue
        _, expected = chain_rows([tuple(row)[3:]], heads.get(node, GENESIS))
        if bytes(stored) != expected:
            reason = "its fields or its chain hash differ from what was committed"
            before_seq = previous.get(node)
            if before_seq is not None and seq != before_seq + 1:
                reason += f" (or rows {before_seq + 1}..{seq - 1} before it were removed)"
            elif before_seq is None and seq != 1:
                reason += " (or rows before it were removed)"
            return _failed(row, node, reason, verified, unchained)
        heads[node] = expected
        previous[node] = seq
        chained.add(node)
        verified += 1
    return Verification(verified, unchained, first, last)


_ID = 3 + SIGNAL_COLUMNS.index("id")
_RECEIVED = 3 + SIGNAL_COLUMNS.index("received_us")


def _failed(
    row: Sequence[Any], node: str, reason: str, verified: int, unchained: int
) -> Verification:
    mismatch = Mismatch(int(row[0]), str(row[_ID]), int(row[_RECEIVED]), node, reason)
    return Verification(verified, unchained, None, None, mismatch)
