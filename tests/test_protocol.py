"""actors.protocol: the pipe messages and the one framing rule (4-byte length + pickle)."""

from __future__ import annotations

import os
import pickle
import struct
import threading

import pytest

from actors.protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Assign,
    BadFrame,
    Cancel,
    Done,
    Failed,
    FrameReader,
    Order,
    Progress,
    Ready,
    SetupFailed,
    StepDone,
    Stop,
    encode,
    write_frame,
)

MESSAGES = [
    Assign([Order(1, 1, "thumbnail", '{"src":"a"}', None, None),
            Order(2, 3, "double", '{"x":2}', 1.5, {"decode": "[1]"})]),
    Cancel(run_id=3),
    Stop(),
    Ready(pid=1234),
    SetupFailed("ImportError", "no module named x", "Traceback ..."),
    StepDone(2, 3, "decode", "[1]"),
    Progress(2, 3, 0.5, "half", '{"a": 1}'),
    Done(1, 1, '{"dst":"a.png"}', 0.25, 10_000_000),
    Failed(2, 3, "ValueError", "bad", "Traceback ...", True, 0.5, 20_000_000),
]


def test_a_frame_is_a_big_endian_length_then_a_pickle():
    frame = encode(Stop())
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    assert pickle.loads(frame[4:]) == Stop()


def test_an_order_has_its_fields_in_the_order_the_supervisor_builds_it():
    order = Order(7, 2, "double", '{"x":2}', 1.5, {"decode": "[1]"}, {"decode": 0})
    assert Order._fields == ("run_id", "attempt", "job", "input", "soft_timeout", "steps", "positions")
    assert order.positions == {"decode": 0}
    assert (order.run_id, order.attempt, order.job, order.input, order.soft_timeout, order.steps) == (
        7, 2, "double", '{"x":2}', 1.5, {"decode": "[1]"})
    ((sent,),) = [m.runs for m in FrameReader().feed(encode(Assign([order])))]
    assert type(sent) is Order and sent.job == "double"


def test_ready_carries_the_protocol_version():
    assert Ready(pid=1).protocol == PROTOCOL_VERSION == 1


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_a_frame(message):
    (decoded,) = FrameReader().feed(encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_frames_fed_byte_by_byte_come_out_whole_and_in_order():
    data = b"".join(encode(m) for m in MESSAGES)
    ends = set()
    offset = 0
    for m in MESSAGES:
        offset += len(encode(m))
        ends.add(offset)
    reader = FrameReader()
    out = []
    for i in range(len(data)):
        got = reader.feed(data[i : i + 1])
        if i + 1 in ends:
            assert len(got) == 1, f"a frame ending at byte {i + 1} must come out there"
        else:
            assert got == [], f"nothing may come out mid-frame (byte {i + 1})"
        out += got
    assert out == MESSAGES


def test_several_frames_in_one_chunk_all_come_out():
    assert FrameReader().feed(b"".join(encode(m) for m in MESSAGES)) == MESSAGES


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 10])
def test_a_chunk_ending_mid_frame_keeps_the_rest_for_later(cut):
    first, second = encode(Ready(pid=1)), encode(Ready(pid=2))
    data = first + second
    at = len(first) + cut
    reader = FrameReader()
    assert reader.feed(data[:at]) == [Ready(pid=1)]
    assert reader.feed(data[at:]) == [Ready(pid=2)]
    assert reader.feed(b"") == []


def test_an_empty_feed_is_harmless():
    assert FrameReader().feed(b"") == []


def test_garbage_raises_bad_frame():
    with pytest.raises(BadFrame, match="undecodable"):
        FrameReader().feed(struct.pack(">I", 5) + b"hello")


def test_a_length_over_the_limit_raises_bad_frame_before_buffering_the_body():
    with pytest.raises(BadFrame, match="frame of"):
        FrameReader().feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(BadFrame):
        FrameReader().feed(b"\xff\xff\xff\xff")
    small = FrameReader(max_frame=100)
    with pytest.raises(BadFrame, match="101 bytes"):
        small.feed(struct.pack(">I", 101))
    assert FrameReader(max_frame=100).feed(encode(Stop())) == [Stop()]


def test_garbage_after_a_good_frame_still_raises():
    with pytest.raises(BadFrame):
        FrameReader().feed(encode(Stop()) + struct.pack(">I", 3) + b"\x00\x01\x02")


def test_write_frame_writes_whole_frames_larger_than_a_pipe_buffer():
    big = Assign([Order(i, 1, "job", "x" * 100, None, None) for i in range(5000)])  # about 600 kB, > a 64 kB pipe
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=lambda: (write_frame(write_fd, big), write_frame(write_fd, Stop()),
                                              os.close(write_fd)))
    writer.start()
    reader = FrameReader()
    out = []
    try:
        while chunk := os.read(read_fd, 1 << 16):
            out += reader.feed(chunk)
    finally:
        writer.join(10)
        os.close(read_fd)
    assert out == [big, Stop()]
