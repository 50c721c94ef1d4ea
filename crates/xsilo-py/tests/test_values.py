"""Values cross without pickle: what round-trips, and what a peer's bytes
cannot do (no code runs, no crash, a clear error)."""

import random

import numpy as np
import pytest

import xsilo
from xsilo import _xsilo


def enc(v):
    return _xsilo.encode_value(v, xsilo._encode_hook, xsilo._decode_hook)


def dec(b):
    return _xsilo.decode_value(b, xsilo._encode_hook, xsilo._decode_hook)


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("inf"), "", "héllo",
    b"", b"\x00\xff", [], [1, [2, [3]]], (), (1, "a", (2.0,)), {"a": 1, 2: [None]},
    {"nested": {"t": (1, 2), "l": [b"x"]}},
])
def test_plain_values_round_trip_with_their_types(value):
    back = dec(enc(value))
    assert back == value
    assert type(back) is type(value)


def test_numpy_arrays_cross_as_raw_buffers():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = enc(a)
    assert b[:4] == b"XSA\x01" and len(b) == 8 + 16 + 48
    back = dec(b)
    assert back.dtype == np.float32 and back.shape == (3, 4) and (back == a).all()
    back[0, 0] = 7  # writable
    inner = {"w": np.ones(3, dtype=np.int16), "b": np.array([True, False])}
    got = dec(enc(inner))
    assert got["w"].dtype == np.int16 and list(got["w"]) == [1, 1, 1]
    assert got["b"].dtype == np.bool_
    assert dec(enc(np.float64(2.5))) == 2.5


@pytest.mark.parametrize("scalar", [
    np.float32(1.25), np.float64(-2.5), np.int8(-3), np.uint64(2**64 - 1), np.int32(7),
    np.bool_(True), np.complex64(1 + 2j), np.float16(0.5),
])
def test_numpy_scalars_keep_their_dtype(scalar):
    back = dec(enc(scalar))
    assert type(back) is type(scalar) and back == scalar
    # Inside a model's state too: a dict of arrays and scalars.
    state = {"w": np.ones(4, dtype=np.float32), "step": scalar, "pair": (scalar, [scalar])}
    got = dec(enc(state))
    assert type(got["step"]) is type(scalar) and type(got["pair"][1][0]) is type(scalar)
    assert got["w"].dtype == np.float32


def test_a_numpy_scalar_from_a_peer_is_checked():
    good = enc(np.float32(1.0))
    # The dtype says 4 bytes: 3 or 5 are refused, and so is an object dtype.
    for bad in (good[:-1], good + b"\x00"):
        with pytest.raises(ValueError):
            dec(bad)
    forged = good.replace(b"<f4", b"|O8") if b"<f4" in good else None
    assert forged is not None
    with pytest.raises(ValueError, match="malformed"):
        dec(forged)


def test_unknown_types_need_a_codec():
    class Point:
        def __init__(self, x):
            self.x = x

    with pytest.raises(TypeError, match="register_codec"):
        enc(Point(1))
    with pytest.raises(TypeError, match="numeric dtypes only"):
        enc([np.array(["a"], dtype=object)])
    xsilo.register_codec(Point, "point", lambda p: str(p.x).encode(), lambda b: Point(int(b)))
    assert dec(enc([Point(3)]))[0].x == 3


def test_malformed_bytes_are_errors_not_crashes():
    good = enc({"a": [1, 2, (3, b"x")], "n": np.zeros(4, dtype=np.float64)})
    rng = random.Random(7)
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        b = bytes(b[: rng.randint(0, len(b))])
        try:
            dec(b)
        except (ValueError, TypeError):
            pass
    for junk in (b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\x91" * 200,
                 b"\xc7\x03\x02\x93\xa2|O", b"XSA\x01\x01\x01\x00\x00" + (5).to_bytes(8, "little")):
        with pytest.raises(ValueError):
            dec(junk)
    # An array of dtype object never decodes: no code runs for peer bytes.
    bad = enc([np.zeros(1)]).replace(b"<f8", b"|O8")
    with pytest.raises(ValueError):
        dec(bad)


def test_a_peer_cannot_flood_hashes_or_amplify_memory():
    import time

    # Tuples of ints can be made to share one hash by the hundred thousand;
    # a dict key from a peer must be of a type whose hashes it cannot pick.
    m = 2**61 - 1
    keys = [(i * m, j * m) for i in range(1, 9) for j in range(1, 9)]
    with pytest.raises(TypeError, match="dict key"):
        enc({k: 0 for k in keys})
    payload = b"\x81" + enc((m, 2 * m)) + b"\x00"
    with pytest.raises(ValueError, match="dict key"):
        dec(payload)
    # 10 MB of empty dicts would be ~700 MB of Python objects: refused,
    # quickly, within the budget.
    n = 10_000_000
    flood = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    t = time.monotonic()
    with pytest.raises(ValueError, match="times its length"):
        dec(flood)
    assert time.monotonic() - t < 10
    # A legitimate list of pairs (about 29 bytes of objects per byte) decodes.
    pairs = [[i % 100, (i * 7) % 100] for i in range(100_000)]
    assert dec(enc(pairs)) == pairs


def test_subclasses_need_a_codec_and_do_not_lose_their_meaning():
    import collections
    import enum

    Point = collections.namedtuple("Point", "x y")

    class Level(enum.IntEnum):
        LOW = 1

    class Sub(np.ndarray):
        pass

    for v in (Point(1, 2), collections.OrderedDict(a=1), Level.LOW,
              np.ma.array([7], mask=[True]), np.zeros(2).view(Sub)):
        with pytest.raises(TypeError, match="register_codec|numpy"):
            enc([v])
    # Big-endian arrays cross with their dtype.
    be = np.arange(3, dtype=">f4")
    got = dec(enc([be]))[0]
    assert got.dtype == np.dtype(">f4") and list(got) == [0.0, 1.0, 2.0]


def _stack_global(module, name, arg):
    """A protocol-4 pickle that calls module.name(arg) (STACK_GLOBAL, REDUCE)."""
    out = bytearray(b"\x80\x04")
    for text in (module, name, arg):
        b = text.encode()
        out += b"\x8c" + bytes([len(b)]) + b
        if text == name:
            out += b"\x93"
    out += b"\x85R."
    return bytes(out)


@pytest.mark.parametrize("module,name", [
    ("numpy._core.numeric", "builtins.exec"),   # a dotted name walks into an import
    ("numpy._core.numeric", "builtins"),        # a module object
    ("os", "system"),                           # under '*': defined in posix, not os
    ("subprocess", "getoutput"),                # a module not on the list
])
def test_the_allow_list_refuses_what_a_payload_names_beyond_it(module, name, monkeypatch, tmp_path):
    import pickle

    monkeypatch.setattr(xsilo, "_allowed", {"numpy._core.numeric": frozenset(["*"]), "os": frozenset(["*"])})
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')"
    with pytest.raises(pickle.UnpicklingError, match="is forbidden"):
        xsilo._decode_hook(xsilo._PICKLE_CODEC, _stack_global(module, name, code), False)
    assert not marker.exists()


def test_task_errors_pickle_and_reach_the_causes_attributes():
    import pickle

    class Coded(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")
            self.code = code

    cause = Coded(7)
    e = xsilo._task_error_class(cause)("alice", "Coded", "code 7", "trace", "task failed", cause)
    assert isinstance(e, Coded) and isinstance(e, xsilo.TaskError) and e.cause is cause
    assert e.code == 7  # the cause's attribute, as on Ray's RayTaskError(Coded)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is xsilo.TaskError and str(back) == "task failed" and back.kind == "Coded"
    remote = xsilo.FedRemoteError("alice", xsilo.FedRemoteError("alice", xsilo.RemoteCause("Coded", "code 7", None)), "text")
    again = pickle.loads(pickle.dumps(remote))
    assert str(again) == "text" and str(again.cause) == "FedRemoteError occurred at alice caused by Coded: code 7"
