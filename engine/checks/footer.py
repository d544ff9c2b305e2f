"""The three numbers the integrity check needs from a parquet footer, read straight off its bytes.

A parquet footer is a `FileMetaData` struct in the Thrift compact protocol (apache/parquet-format,
parquet.thrift). We need field 2 (schema: a list), 3 (num_rows: i64) and 4 (row_groups: a list of
RowGroup, whose field 3 is num_rows); every other field is skipped by its wire type.

Why not a Thrift library: thriftpy2 cost ~220 ms of CPU per run (its import pulls in an IDL parser,
and parsing even a trimmed IDL takes ~130 ms), a third of the engine's start-up, and decoded every
column chunk's metadata in pure Python; pyarrow costs ~90 MB RSS to import. Skipping by wire type is
the whole decoder. tests/test_integrity_footer.py checks it against pyarrow on real files.
"""

from __future__ import annotations

from dataclasses import dataclass

# Compact protocol wire types (thrift/doc/specs/thrift-compact-protocol.md)
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(1, 14)
_MAX_NESTING = 64


class FooterError(ValueError):
    """The footer bytes are not a well-formed FileMetaData."""


@dataclass(frozen=True)
class FooterCounts:
    num_rows: int | None
    schema_elements: int
    row_group_rows: list[int | None]


def footer_counts(raw: bytes) -> FooterCounts:
    r = _CompactReader(raw)
    num_rows, schema, groups = None, 0, []
    for field, wire in r.fields():
        if field == 2 and wire == _LIST:
            schema = r.skip_list()
        elif field == 3 and wire == _I64:
            num_rows = r.zigzag()
        elif field == 4 and wire == _LIST:
            n, element = r.list_header()
            if n and element != _STRUCT:
                raise FooterError("row_groups is not a list of structs")
            groups = [_row_group_rows(r) for _ in range(n)]
        else:
            r.skip(wire)
    return FooterCounts(num_rows, schema, groups)


def _row_group_rows(r: _CompactReader) -> int | None:
    rows = None
    for field, wire in r.fields():
        if field == 3 and wire == _I64:
            rows = r.zigzag()
        else:
            r.skip(wire)
    return rows


class _CompactReader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0
        self.depth = 0

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise FooterError("footer ends mid-value")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def advance(self, n: int) -> None:
        self.pos += n
        if n < 0 or self.pos > len(self.buf):
            raise FooterError("footer ends mid-value")

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise FooterError("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def fields(self):
        """(field id, wire type) of each field of a struct, up to its stop byte."""
        field = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            delta, wire = header >> 4, header & 0x0F
            field = field + delta if delta else self.zigzag()
            yield field, wire

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        n = header >> 4
        return (self.varint() if n == 15 else n), header & 0x0F

    def skip_list(self) -> int:
        n, element = self.list_header()
        for _ in range(n):
            self.skip(element, in_container=True)
        return n

    def skip(self, wire: int, in_container: bool = False) -> None:
        if wire in (_BOOL_TRUE, _BOOL_FALSE):
            if in_container:  # a field header carries a bool's value; a container stores a byte
                self.advance(1)
        elif wire == _BYTE:
            self.advance(1)
        elif wire in (_I16, _I32, _I64):
            self.varint()
        elif wire == _DOUBLE:
            self.advance(8)
        elif wire == _BINARY:
            self.advance(self.varint())
        elif wire == _UUID:
            self.advance(16)
        elif wire in (_LIST, _SET, _MAP, _STRUCT):
            self.depth += 1
            if self.depth > _MAX_NESTING:
                raise FooterError("footer nested too deep")
            if wire == _STRUCT:
                for _, inner in self.fields():
                    self.skip(inner)
            elif wire == _MAP:
                n = self.varint()
                types = self.byte() if n else 0
                for _ in range(n):
                    self.skip(types >> 4, in_container=True)
                    self.skip(types & 0x0F, in_container=True)
            else:
                self.skip_list()
            self.depth -= 1
        else:
            raise FooterError(f"unknown compact wire type {wire}")
