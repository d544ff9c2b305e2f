"""What the integrity check needs from a parquet footer, read straight off its bytes: the row
counts, and where every column chunk's pages are; and the first fields of a page header.

A parquet footer is a `FileMetaData` struct in the Thrift compact protocol (apache/parquet-format,
parquet.thrift). We need field 2 (schema: a list), 3 (num_rows: i64) and 4 (row_groups: a list of
RowGroup: field 1 its columns, field 3 num_rows). A ColumnChunk's field 3 is its ColumnMetaData:
5 num_values, 7 total_compressed_size (every page with its header), 9 data_page_offset, 11
dictionary_page_offset. A PageHeader starts with 1 type, 2 uncompressed_page_size and 3
compressed_page_size (i32 each). Every other field is skipped by its wire type.

Why not a Thrift library: thriftpy2 cost ~220 ms of CPU per run (its import pulls in an IDL parser,
and parsing even a trimmed IDL takes ~130 ms), a third of the engine's start-up, and decoded every
column chunk's metadata in pure Python; pyarrow costs ~90 MB RSS to import. Skipping by wire type is
the whole decoder. tests/test_integrity_footer.py checks it against pyarrow on real files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Compact protocol wire types (thrift/doc/specs/thrift-compact-protocol.md)
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(1, 14)
_MAX_NESTING = 64


class FooterError(ValueError):
    """The footer bytes are not a well-formed FileMetaData."""


class Truncated(FooterError):
    """The bytes end before the struct does (read more, or the file is cut)."""


DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = range(4)


@dataclass(frozen=True)
class ColumnChunk:
    """Where one column chunk's pages are, as the footer says."""

    start: int  # its first page: the dictionary page when there is one
    data_page: int
    dictionary_page: int | None
    length: int  # total_compressed_size: every page with its header


@dataclass(frozen=True)
class FooterCounts:
    num_rows: int | None
    schema_elements: int
    row_group_rows: list[int | None]
    chunks: list[ColumnChunk]


@dataclass(frozen=True)
class PageHeader:
    kind: int
    compressed_size: int
    header_size: int  # bytes of the header itself: the page's data follows it


def page_header(raw: bytes) -> PageHeader:
    """The first fields of a PageHeader at the start of `raw`; raises Truncated if `raw` ends first."""
    r = _CompactReader(raw)
    values: dict[int, int] = {}
    for field, wire in r.fields():
        if field in (1, 2, 3) and wire == _I32:
            values[field] = r.zigzag()
        else:
            r.skip(wire)
    kind, uncompressed, compressed = (values.get(f) for f in (1, 2, 3))
    if kind is None or uncompressed is None or compressed is None:
        raise FooterError("a page header without its type or sizes")
    if kind not in (DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2) or uncompressed < 0 or compressed < 0:
        raise FooterError(f"a page header of type {kind} with sizes {uncompressed}/{compressed}")
    return PageHeader(kind, compressed, r.pos)


def footer_counts(raw: bytes) -> FooterCounts:
    r = _CompactReader(raw)
    num_rows: int | None = None
    schema = 0
    groups: list[Any] = []
    chunks: list[Any] = []
    for field, wire in r.fields():
        if field == 2 and wire == _LIST:
            schema = r.skip_list()
        elif field == 3 and wire == _I64:
            num_rows = r.zigzag()
        elif field == 4 and wire == _LIST:
            n, element = r.list_header()
            if n and element != _STRUCT:
                raise FooterError("row_groups is not a list of structs")
            groups = [_row_group(r, chunks) for _ in range(n)]
        else:
            r.skip(wire)
    return FooterCounts(num_rows, schema, groups, chunks)


def _row_group(r: _CompactReader, chunks: list[ColumnChunk]) -> int | None:
    """A RowGroup's row count; its column chunks are added to `chunks`."""
    rows = None
    for field, wire in r.fields():
        if field == 3 and wire == _I64:
            rows = r.zigzag()
        elif field == 1 and wire == _LIST:
            n, element = r.list_header()
            if n and element != _STRUCT:
                raise FooterError("columns is not a list of structs")
            for _ in range(n):
                if (chunk := _column_chunk(r)) is not None:
                    chunks.append(chunk)
        else:
            r.skip(wire)
    return rows


def _column_chunk(r: _CompactReader) -> ColumnChunk | None:
    """Where a ColumnChunk's pages are; None when they are elsewhere (another file), not stated
    (encrypted metadata), or there are none."""
    external, meta = False, None
    for field, wire in r.fields():
        if field == 1 and wire == _BINARY:
            external = True
            r.skip(wire)
        elif field == 3 and wire == _STRUCT:
            meta = _i64_fields(r, (5, 7, 9, 11))
        else:
            r.skip(wire)
    if external or meta is None or meta.get(7) is None or meta.get(9) is None or not meta.get(5):
        return None  # no values: writers put no data page (and offsets such as 0) there
    data, dictionary = meta[9], meta.get(11)
    if dictionary is not None and not 0 < dictionary < data:
        dictionary = None  # 0 (some writers' "none"), or after the data page: not where the chunk starts
    return ColumnChunk(data if dictionary is None else dictionary, data, dictionary, meta[7])


def _i64_fields(r: _CompactReader, wanted: tuple[int, ...]) -> dict[int, int]:
    found = {}
    for field, wire in r.fields():
        if field in wanted and wire == _I64:
            found[field] = r.zigzag()
        else:
            r.skip(wire)
    return found


class _CompactReader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0
        self.depth = 0

    def byte(self) -> int:
        try:
            b = self.buf[self.pos]
        except IndexError:
            raise Truncated("footer ends mid-value") from None
        self.pos += 1
        return b

    def advance(self, n: int) -> None:
        self.pos += n
        if n < 0:
            raise FooterError("a negative length")
        if self.pos > len(self.buf):
            raise Truncated("footer ends mid-value")

    def varint(self) -> int:
        buf, pos = self.buf, self.pos
        result = shift = 0
        try:
            while True:
                b = buf[pos]
                pos += 1
                result |= (b & 0x7F) << shift
                if not b & 0x80:
                    self.pos = pos
                    return result
                shift += 7
                if shift > 63:
                    raise FooterError("varint longer than 64 bits")
        except IndexError:
            raise Truncated("footer ends mid-value") from None

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, wire type) of each field of a struct, up to its stop byte."""
        field = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            delta, wire = header >> 4, header & 0x0F
            field = field + delta if delta else self.zigzag()
            yield field, wire

    def skip_struct(self) -> None:
        while header := self.byte():
            if not header >> 4:
                self.zigzag()  # a field id in long form
            self.skip(header & 0x0F)

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
        if _I16 <= wire <= _I64:  # the most frequent first
            self.varint()
        elif wire == _BINARY:
            self.advance(self.varint())
        elif wire in (_BOOL_TRUE, _BOOL_FALSE):
            if in_container:  # a field header carries a bool's value; a container stores a byte
                self.advance(1)
        elif wire == _BYTE:
            self.advance(1)
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
                self.skip_struct()
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
