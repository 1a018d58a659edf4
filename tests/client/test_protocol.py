"""logsvc_client._protocol: the frames as docs/protocol.md lays them out, and record encoding."""

from __future__ import annotations

import datetime
import enum
import json
import logging
import logging.handlers
import pickle
import pickletools
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logsvc_client import _protocol as proto


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", 1 + len(body), kind) + body


def record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("app.db", logging.WARNING, "/srv/app.py", 7, msg, args, None, "f")
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_hello_is_the_preamble_then_one_json_frame() -> None:
    data = proto.hello("ab" * 16, "pickle", "logsvc_client/0.1.0")
    assert data[:8] == b"\x89LOGSVC\n"
    (length,) = struct.unpack_from(">L", data, 8)
    assert data[12] == 0x01 and length == len(data) - 12
    assert json.loads(data[13:]) == {
        "protocol": 1,
        "stream": "ab" * 16,
        "format": "pickle",
        "client": "logsvc_client/0.1.0",
    }
    # Read as a stock frame length, the preamble is over any frame cap (over 2 GiB).
    assert struct.unpack_from(">L", data)[0] > 2**31


def test_records_frame_layout() -> None:
    data = proto.records_frame(41, [b"a", b"", b"xyz"])
    length, kind, first, count = struct.unpack_from(">LBQL", data)
    assert (kind, first, count) == (0x02, 41, 3) and length == len(data) - 4
    assert data[17:] == b"\0\0\0\x01a" + b"\0\0\0\0" + b"\0\0\0\x03xyz"
    assert proto.records_frame_size(4, 3) == length


SERVER_STREAM = (
    frame(0x81, json.dumps({"acked": 5, "max_frame_bytes": 1 << 22, "window": 100}).encode())
    + frame(0x82, struct.pack(">Q", 9))
    + frame(0x83, b'{"error": "stream_busy", "message": "in use"}')
)
EXPECTED = [
    proto.Welcome(5, 1 << 22, proto.DEFAULT_MAX_RECORD_BYTES, 100, ""),
    proto.Ack(9),
    proto.Error("stream_busy", "in use"),
]


def read_all(reader: proto.FrameReader) -> list[proto.ServerFrame]:
    out = []
    while (f := reader.next_frame()) is not None:
        out.append(f)
    return out


def test_reader_whole_bytewise_and_with_trailing_data() -> None:
    r = proto.FrameReader()
    r.feed(SERVER_STREAM)
    assert read_all(r) == EXPECTED
    r = proto.FrameReader()
    got: list[proto.ServerFrame] = []
    for i in range(len(SERVER_STREAM)):
        r.feed(SERVER_STREAM[i : i + 1])
        got += read_all(r)
    assert got == EXPECTED
    r = proto.FrameReader()
    r.feed(SERVER_STREAM + SERVER_STREAM[:7])
    assert read_all(r) == EXPECTED
    r.feed(SERVER_STREAM[7:])
    assert read_all(r) == EXPECTED


@pytest.mark.parametrize(
    "data",
    [
        b"\0\0\0\0\x82",  # length 0
        b"\x10\0\0\0\x82",  # over the cap
        frame(0x82, b"\0" * 7),  # ACK body not 8 bytes
        frame(0x99, b"x"),  # unknown type (a newer server)
        frame(0x81, b"not json"),
        frame(0x81, b"[1]"),
        frame(0x81, b'{"acked": -1}'),
        frame(0x81, b'{"acked": "5"}'),
        frame(0x81, b'{"window": 0}'),
        frame(0x02, b"x"),  # a client frame type from the server
    ],
)
def test_reader_refuses_what_is_not_a_server_frame(data: bytes) -> None:
    r = proto.FrameReader()
    r.feed(data)
    with pytest.raises(proto.ProtocolError):
        read_all(r)


@given(st.binary(max_size=300))
def test_any_bytes_give_frames_or_protocol_error(data: bytes) -> None:
    r = proto.FrameReader()
    r.feed(data)
    try:
        read_all(r)
    except proto.ProtocolError:
        pass


def test_a_plain_record_encodes_exactly_as_socket_handler_does() -> None:
    stock = logging.handlers.SocketHandler("localhost", 0)
    rec = record(trace_id=3, run="r1", nested={"a": [1, 2.5, None, True]})
    assert proto.encode_record(rec, logging.Formatter(), "pickle") == stock.makePickle(rec)[4:]


def globals_in(data: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(data) if "GLOBAL" in op.name or op.name == "REDUCE"]


class Color(enum.Enum):
    RED = 1


class Name(str):
    pass


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_values_pickle_would_name_as_globals_become_text() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    rec = record(
        obj=object(),
        color=Color.RED,
        name=Name("x"),
        when=when,
        deep={"k": [(1, Color.RED)], Color.RED: 2},
        bad=BadRepr(),
        big="x" * 10,
        huge=[b"y" * 5000],
    )
    data = proto.encode_record(rec, logging.Formatter(), "pickle")
    assert globals_in(data) == []
    d = pickle.loads(data)
    assert d["color"] == "<Color.RED: 1>" and d["name"] == "'x'" and d["when"] == when.isoformat()
    assert d["deep"] == {"k": [(1, "<Color.RED: 1>")], "<Color.RED: 1>": 2}
    assert d["bad"] == "<unrepresentable BadRepr>"
    assert d["huge"][0].endswith("...") and len(d["huge"][0]) == proto.MAX_REPR_CHARS + 3
    assert d["msg"] == "hello world" and d["args"] is None


def test_a_traceback_travels_as_exc_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("a", logging.ERROR, "p", 1, "failed", None, sys.exc_info())
    d = pickle.loads(proto.encode_record(rec, logging.Formatter(), "pickle"))
    assert d["exc_info"] is None and "ValueError: boom" in d["exc_text"]
    assert globals_in(proto.encode_record(rec, logging.Formatter(), "pickle")) == []


def test_deep_nesting_is_cut_to_text() -> None:
    v: object = 1
    for _ in range(100):
        v = [v]
    d = pickle.loads(proto.encode_record(record(v=v), logging.Formatter(), "pickle"))
    depth, cur = 0, d["v"]
    while isinstance(cur, list):
        depth, cur = depth + 1, cur[0]
    assert depth == proto.MAX_NESTING and isinstance(cur, str)


def test_json_format_carries_message_and_extras() -> None:
    doc = json.loads(proto.encode_record(record(run="r", obj=object()), logging.Formatter(), "json"))
    assert doc["message"] == "hello world" and doc["levelname"] == "WARNING" and doc["name"] == "app.db"
    assert doc["run"] == "r" and doc["obj"].startswith("<object object")
