"""PickleFormat: one ``SocketHandler`` frame body -> one ``RecordDict``, without trusting the sender.

Sans-IO: bytes in, a plain dict or ``ProtocolError`` out. Nothing the peer sends is imported,
called or looked up by a name of its choosing, and the work done per frame is bounded.

Theory of operation. A frame body is ``pickle.dumps(record.__dict__, 1)`` (logging/handlers.py
``makePickle``). It goes through three steps:

1. ``_scan`` walks the opcodes without building anything (a C-speed ``re`` tokenizer for the
   opcodes typical records use, an exact pure-Python walk otherwise) and rejects frames the
   C unpickler would handle dangerously. The C unpickler is fast but was not written for hostile
   input (its docs say so), and three of its behaviours matter to a server:

   - Memo size. ``LONG_BINPUT``/``PUT`` with index ``i`` grows the C memo array to ``2*i`` slots
     and zero-fills them: a 7-byte pickle can make the process touch ~32 GiB (CPython gh-115952,
     fixed after 3.14; modelscan #86). We require memo indices to be sequential, as every
     pickler writes them, so the memo never exceeds the number of opcodes in the frame.
   - Hashing. Tuples do not cache their hash, so ``t1 = (t0, t0); t2 = (t1, t1); ...`` built with
     memo ``GET`` (or ``DUP``, which no pickler writes) is a 400-byte dict key whose hash takes
     2**60 steps, inside C, uninterruptible. Ints do not cache theirs either: a 500 KB ``LONG4``
     put into a set 500 000 times through ``DUP`` or ``GET`` costs ~150 s of hashing.
     Ints/Decimals/UUIDs have predictable hashes (``i`` and ``i + (2**61 - 1)`` collide), so a
     1 MiB dict of colliding keys costs O(n**2) probes: ~9 s measured for 40 000 int keys. We cap
     the number of memo/``DUP`` references to possible tuples and variable-size ints, and of
     objects whose hash the sender can choose, per frame (``reason="complexity"``); typical
     records have 3 (their floats) and no such reference (picklers never memoize ints).
   - Extensions. ``EXT1/2/4`` resolve through ``copyreg._extension_cache`` *before* calling
     ``find_class``: once anything in the process has unpickled a registered code, a restricted
     unpickler gets the real object (we checked: it ran ``os.getcwd``). The stdlib registers no
     codes and ``SocketHandler`` never sends these opcodes, so they are refused, as are
     ``PERSID``/``BINPERSID`` and out-of-band buffers (``reason="forbidden"``).

2. ``RestrictedUnpickler`` (a subclass of the C ``pickle.Unpickler``) loads the frame.
   ``find_class`` maps a short allow-list to real data types and safe stand-ins; a global
   that only an attack names (``os.system``, ``builtins.eval``, ``subprocess.*``: see
   ``_HOSTILE_MODULES``) refuses the frame (``reason="forbidden"``, the connection is closed);
   every other global becomes an inert ``Placeholder`` subclass that records only its dotted
   name, and the record is kept (it is what ``extra=`` holding an application's object sends). One
   unpickler is reused per ``PickleFormat`` over ``_FrameReader``, whose ``peek`` hands the C code
   the whole frame at once (one Python call per frame instead of one ``read`` per opcode); the
   memo is cleared after every frame.

3. ``_normalize`` rebuilds the dict from plain data only (None, bool, int, float, str, bytes,
   list, tuple, dict with str keys, datetime/date/time/timedelta, Decimal, UUID), with a node,
   depth and character budget per record so shared references cannot multiply the work done
   here or by whoever serializes the record later.

What protocol-1 records look like (``pickletools.dis``), for the allow-list below::

    datetime   c datetime datetime ( c _codecs encode ( X '<10 bytes>' X 'latin1' t R
                 c datetime timezone ( c datetime timedelta ( K0 K0 K0 t R t R t R
    date/time  c datetime date ( c _codecs encode ( X '<4 bytes>' X 'latin1' t R t R
    timedelta  c datetime timedelta ( K1 K0 K0 t R
    Decimal    c decimal Decimal ( X '1.5' t R
    UUID       c copy_reg _reconstructor ( c uuid UUID c __builtin__ object N t R } X 'int' L.. s b
    bytes      c _codecs encode ( X '\\x00\\xff' X 'latin1' t R        (b"": c __builtin__ bytes ) R)
    set        c __builtin__ set ( ] K1 a t R                          -> placeholder

Note the protocol-0/1 names ``copy_reg`` and ``__builtin__``: the C unpickler applies
``fix_imports`` inside the *default* ``find_class``, so an override sees the old names.
"""

from __future__ import annotations

import _compat_pickle
import datetime as _dt
import pickle
import pickletools
import re
import struct
import uuid
from decimal import Decimal
from typing import Any, ClassVar, NoReturn

from logsvc.errors import ProtocolError
from logsvc.record import RecordDict

__all__ = [
    "MAX_NORMALIZED_CHARS",
    "MAX_NORMALIZED_DEPTH",
    "MAX_NORMALIZED_NODES",
    "MAX_PREDICTABLE_HASHES",
    "MAX_TUPLE_REFS",
    "PickleFormat",
    "Placeholder",
    "RestrictedUnpickler",
]

# --- caps -----------------------------------------------------------------------------------

# Normalization budget per record. Containers cost 1 + len(container) nodes per visit (so a
# list referenced 1 000 times through the memo is paid for 1 000 times); str and bytes cost
# their length in characters. Past the budget a value becomes "<too large: TYPE>". Precedents:
# Python's json has no such limit, but Go encoding/json caps nesting at 10 000 and Rust
# serde_json at 128 levels; orjson refuses more than 254 levels. 32 levels and 10 000 nodes
# are far beyond any `extra=` we have seen and small enough to serialize in well under 1 ms.
MAX_NORMALIZED_NODES = 10_000
MAX_NORMALIZED_DEPTH = 32
# Four times MAX_FRAME_BYTES: a record legitimately repeats a string (msg and message are often
# the same object, pickled once), but 4 MiB of text per record is the most we ever write out.
MAX_NORMALIZED_CHARS = 4 << 20

# Per-frame opcode caps checked by _scan (reason "complexity"); see the module docstring.
# MAX_TUPLE_REFS memo GET or DUP references to possible tuples (or variable-size ints, whose
# hash is not cached either) multiply hashing work by at most 2**MAX_TUPLE_REFS.
# MAX_PREDICTABLE_HASHES counts the objects whose hash a sender can choose: floats, tuples,
# frozensets, ints of 55 bits or more and constructed objects (Decimal, UUID). str, bytes,
# datetimes and small ints cannot be made to collide (the first three are hashed with the
# per-process random seed, small ints hash to themselves). n colliding dict keys cost ~n**2/2
# comparisons: measured here 8.5 ms for 1 024 keys, 106 ms for 4 096.
MAX_TUPLE_REFS = 4
MAX_PREDICTABLE_HASHES = 1024

# Placeholder classes: at most this many distinct ones are created per frame (creating a class
# costs ~10 us), and at most _MAX_CACHED_PLACEHOLDERS are kept process-wide.
_MAX_NEW_PLACEHOLDERS_PER_FRAME = 64
_MAX_CACHED_PLACEHOLDERS = 1024
_MAX_NAME_CHARS = 200

# A reused unpickler keeps its memo array; after a frame with more memo entries than this we
# drop it rather than carry (and clear) a big memo for every later frame.
_MAX_REUSED_MEMO = 4096

# Ints are kept while str(int) works everywhere (Python refuses > 4300 digits by default).
_INT_LIMIT = 10**4000

# --- placeholders and safe stand-ins --------------------------------------------------------


class Placeholder:
    """Inert stand-in for a global we refuse to import.

    ``find_class`` returns a subclass per dotted name. Calling it (REDUCE, INST, OBJ), ``__new__``
    (NEWOBJ, NEWOBJ_EX) and ``__setstate__`` (BUILD) accept anything and keep nothing: the only
    information an instance carries is its class's ``global_name``.
    """

    __slots__ = ()
    global_name: ClassVar[str] = "?"

    def __new__(cls, *args: object, **kwargs: object) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, *state: object) -> None:
        # Also reached as Cls.__setstate__(state) when BUILD targets the class itself; either
        # way nothing is stored, so a peer cannot change a cached class for later frames.
        pass

    def __repr__(self) -> str:
        return f"<unpicklable {self.global_name}>"


def _new_placeholder_class(dotted: str) -> type[Placeholder]:
    return type(
        "Placeholder", (Placeholder,), {"__slots__": (), "global_name": dotted, "__module__": __name__}
    )


_OVERFLOW_PLACEHOLDER = _new_placeholder_class("(too many distinct globals)")
_PLACEHOLDER_CLASSES: dict[tuple[str, str], type[Placeholder]] = {}


class _SafeCallable:
    """Base of the stand-ins ``find_class`` returns for the few callables protocol 1 needs.

    They are classes whose ``__new__`` does the work and returns a plain value, so the unpickler
    only ever holds types (NEWOBJ demands one) and never a function object: BUILD with a
    ``(None, {"__defaults__": ...})`` state would otherwise rebind attributes of a function we
    share between frames. BUILD on one of these classes raises.
    """

    __slots__ = ()

    @staticmethod
    def __setstate__(*state: object) -> NoReturn:
        raise pickle.UnpicklingError("BUILD on a restricted callable")


def _placeholder_value(module: str, name: str) -> Placeholder:
    cls = _PLACEHOLDER_CLASSES.get((module, name))
    if cls is None:
        cls = _new_placeholder_class(f"{module}.{name}")
    return cls()


class _CodecsEncode(_SafeCallable):
    # Protocol < 3 pickles bytes as _codecs.encode(str(b, "latin1"), "latin1").
    def __new__(cls, obj: object = None, encoding: object = "utf-8", errors: object = "strict") -> Any:
        if type(obj) is str and encoding == "latin1" and errors == "strict":
            return obj.encode("latin1")
        return _placeholder_value("_codecs", "encode")


class _Bytes(_SafeCallable):
    # Protocol < 3 pickles b"" as bytes(); bytes(10**12) would allocate, so only () is taken.
    def __new__(cls, *args: object) -> Any:
        if not args:
            return b""
        return _placeholder_value("builtins", "bytes")


class _Bytearray(_SafeCallable):
    # Protocol < 5 pickles a bytearray as bytearray(bytes_value); it is normalized to bytes.
    def __new__(cls, *args: object) -> Any:
        if not args:
            return b""
        if len(args) == 1 and type(args[0]) is bytes:
            return args[0]
        return _placeholder_value("builtins", "bytearray")


class _UUIDType(_SafeCallable):
    # Stands for uuid.UUID. With no arguments (copyreg.__newobj__ / NEWOBJ) it makes the empty
    # instance BUILD then fills via UUID.__setstate__; with arguments it is the constructor.
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            return object.__new__(uuid.UUID)
        return uuid.UUID(*args, **kwargs)


class _SafeUUIDValue(_SafeCallable):
    # uuid.SafeUUID(value, names=...) would try to *create* an enum; only the lookup is allowed.
    def __new__(cls, value: object) -> Any:
        return uuid.SafeUUID(value)


class _Reconstructor(_SafeCallable):
    # copyreg._reconstructor(cls, base, state): protocol 0/1 pickles of UUID and of any plain
    # user class (which arrives as a Placeholder subclass) look like this.
    def __new__(cls, klass: object = None, base: object = None, state: object = None) -> Any:
        if klass is _UUIDType and base is object and state is None:
            return object.__new__(uuid.UUID)
        if isinstance(klass, type) and issubclass(klass, Placeholder):
            return klass()
        return _placeholder_value("copyreg", "_reconstructor")


_ALLOWED: dict[tuple[str, str], type] = {
    ("datetime", "datetime"): _dt.datetime,
    ("datetime", "date"): _dt.date,
    ("datetime", "time"): _dt.time,
    ("datetime", "timedelta"): _dt.timedelta,
    ("datetime", "timezone"): _dt.timezone,
    ("decimal", "Decimal"): Decimal,
    ("uuid", "UUID"): _UUIDType,
    ("uuid", "SafeUUID"): _SafeUUIDValue,
    ("_codecs", "encode"): _CodecsEncode,
    ("copyreg", "_reconstructor"): _Reconstructor,
    ("copy_reg", "_reconstructor"): _Reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    ("builtins", "bytes"): _Bytes,
    ("__builtin__", "bytes"): _Bytes,
    ("builtins", "bytearray"): _Bytearray,
    ("__builtin__", "bytearray"): _Bytearray,
}


class _Forbidden(Exception):
    pass


# Globals no log record carries, only an attack does: code execution, imports, processes,
# files, sockets, interpreter internals. Naming one (to call it or not) closes the connection
# as ``forbidden``. This list is NOT what keeps us safe: nothing outside ``_ALLOWED`` is ever
# imported or called whatever its name. It decides only who is cut off. Every other unknown
# global (an application's own class in ``extra=``: an Enum, an exception, a dataclass, a
# Path) is what a stock SocketHandler sends for a well-meaning record, so it becomes a
# placeholder string and the record is kept.
_HOSTILE_MODULES: frozenset[str] = frozenset(
    """os posix nt posixpath ntpath subprocess _posixsubprocess sys importlib imp pkgutil runpy
    zipimport shutil socket _socket ssl pickle _pickle cPickle marshal dill cloudpickle ctypes
    _ctypes cffi pty tty webbrowser commands popen2 platform code codeop inspect gc types
    operator _operator functools timeit profile cProfile pdb bdb trace multiprocessing threading
    _thread signal asyncio urllib http ftplib smtplib telnetlib xmlrpc sqlite3 tempfile glob
    linecache io _io fcntl resource mmap select selectors winreg _winapi msvcrt""".split()
)
_HOSTILE_BUILTINS: frozenset[str] = frozenset(
    """eval exec compile open __import__ getattr setattr delattr globals locals vars input
    breakpoint exit quit help type super classmethod staticmethod property memoryview
    __build_class__ __loader__ __spec__""".split()
)


def _hostile(module: str, name: str) -> bool:
    top = module.split(".", 1)[0]
    if top in ("builtins", "__builtin__"):
        return name.split(".", 1)[0] in _HOSTILE_BUILTINS
    return top in _HOSTILE_MODULES


class RestrictedUnpickler(pickle.Unpickler):
    """The C unpickler with ``find_class`` restricted to ``_ALLOWED`` and placeholders.

    On its own it never imports anything the sender names; ``_scan`` must still run first (see
    the module docstring) to bound memory and time. Use it only through ``PickleFormat``.
    """

    # Placeholder classes this frame may still create; PickleFormat resets it per frame.
    new_classes_left: int = _MAX_NEW_PLACEHOLDERS_PER_FRAME

    def find_class(self, module: str, name: str, /) -> Any:
        key = (module, name)
        allowed = _ALLOWED.get(key)
        if allowed is not None:
            return allowed
        if _hostile(module, name):
            raise _Forbidden(f"the frame names {module[:80]}.{name[:80]}, which no log record carries")
        cls = _PLACEHOLDER_CLASSES.get(key)
        if cls is not None:
            return cls
        if self.new_classes_left <= 0:
            return _OVERFLOW_PLACEHOLDER
        self.new_classes_left -= 1
        # Name it as Python 3 would (protocol 0/1 say __builtin__.set, exceptions.ValueError).
        display = _compat_pickle.NAME_MAPPING.get(key, key)
        dotted = f"{_compat_pickle.IMPORT_MAPPING.get(display[0], display[0])}.{display[1]}"
        if len(dotted) > _MAX_NAME_CHARS:
            dotted = dotted[:_MAX_NAME_CHARS] + "..."
        cls = _new_placeholder_class(dotted)
        if len(_PLACEHOLDER_CLASSES) >= _MAX_CACHED_PLACEHOLDERS:
            del _PLACEHOLDER_CLASSES[next(iter(_PLACEHOLDER_CLASSES))]
        _PLACEHOLDER_CLASSES[key] = cls
        return cls

    def persistent_load(self, pid: object, /) -> NoReturn:
        # Unreachable after _scan (which refuses PERSID/BINPERSID); kept as a second lock.
        raise _Forbidden("persistent IDs are not accepted")


class _FrameReader:
    """The minimal file object the C unpickler needs, over one frame at a time.

    ``peek`` returns everything left, so the unpickler parses from that buffer and only calls
    back into Python once more (``read(consumed)``) when it finishes.
    """

    __slots__ = ("data", "pos")

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0

    def peek(self, n: int = 0) -> bytes:
        return self.data[self.pos :] if self.pos else self.data

    def read(self, n: int = -1) -> bytes:
        start = self.pos
        end = len(self.data) if n is None or n < 0 else min(start + n, len(self.data))
        self.pos = end
        return self.data[start:end]

    def readinto(self, b: bytearray | memoryview) -> int:
        chunk = self.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)

    def readline(self, size: int = -1) -> bytes:
        start = self.pos
        nl = self.data.find(b"\n", start)
        end = len(self.data) if nl < 0 else nl + 1
        if size is not None and size >= 0:
            end = min(end, start + size)
        self.pos = end
        return self.data[start:end]


# --- the opcode scan ------------------------------------------------------------------------

_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u64 = struct.Struct("<Q").unpack_from

# _ARG[op] >= 0: fixed-size argument, no other check. _SPECIAL: handled in the if-chain below.
# _REFUSED: refuse the frame. Anything pickletools does not know is also refused.
_SPECIAL = -1
_REFUSED = -2
_UNKNOWN = -3
_ARG = [_UNKNOWN] * 256
for _op in pickletools.opcodes:
    _code = ord(_op.code.encode("latin1"))
    _ARG[_code] = (
        _op.arg.n if _op.arg is not None and _op.arg.n >= 0 else (0 if _op.arg is None else _SPECIAL)
    )
for _c in "ghjpqr\x94R\x81\x92ob.Gt\x85\x86\x87\x91}2":  # memo, calls, STOP, floats, tuples, DUP
    _ARG[ord(_c)] = _SPECIAL
for _c in "PQ\x82\x83\x84\x97\x98":  # PERSID, BINPERSID, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER
    _ARG[ord(_c)] = _REFUSED

# Ops after which the top of the stack is a freshly made object that is certainly not a tuple
# (REDUCE & co. can only call the classes find_class returns, none of which returns a tuple).
# Memo entries stored (and DUPs made) right after any other op are treated as possible tuples.
# INT, LONG, LONG1 and LONG4 are left out too: an int's hash is not cached and costs O(digits)
# (~0.6 ms for 1 MB), so repeated references to a big one are a hashing bomb like tuples.
_FRESH = bytearray(256)
for _c in "JKMSTUBC\x8e\x96NV\x88\x89\x8cX\x8dFG]l}d\x8f\x91cR\x81\x92oi\x93":
    _FRESH[ord(_c)] = 1
# Fixed-size ops that can appear in a flat dict of scalars (see _scan's ``plain``).
_PLAIN_OP = bytearray(256)
for _c in "KMJN\x88\x89(us\x80\x95":
    _PLAIN_OP[ord(_c)] = 1
_NO_ARG_RISKY = frozenset(b"t\x85\x86\x87\x91R\x81\x92ob")
_TUPLE_MARK = ord("t")  # stands for "possibly a tuple" in the `prev` variable below
_NONE_MARK = ord("N")  # stands for "certainly not a tuple"


def _refuse(message: str, reason: str = "malformed") -> NoReturn:
    raise ProtocolError(message, reason=reason)


def _scan_exact(frame: bytes) -> tuple[int, bool]:
    """Walk the opcodes of ``frame`` exactly as the C unpickler will.

    Returns:
        ``(memo_size, plain)``: the number of memo entries, and whether the pickle can only be a
        flat dict (or a scalar) whose values are str/int/float/None/bool, with no shared
        references and no int over 2**64, so that normalization may keep it as it is once its
        keys are checked.

    Raises:
        ProtocolError: ``malformed`` (cannot be walked, non-sequential memo, bytes after STOP),
            ``forbidden`` (PERSID, EXT, out-of-band buffers) or ``complexity`` (over a cap).
    """
    arg = _ARG
    fresh = _FRESH
    plain_op = _PLAIN_OP
    n = len(frame)
    i = 0
    memo = 0  # entries stored so far; every pickler numbers them 0, 1, 2, ...
    maybe_tuple: set[int] | None = None
    tuple_refs = 0
    risky = 0  # objects whose hash the sender can choose
    dicts = 0
    plain = True
    prev = 0  # last op that set the top of the stack
    try:
        while True:
            op = frame[i]
            if op == 0x58:  # BINUNICODE (+ BINPUT): the bulk of every record
                i += 5 + _u32(frame, i + 1)[0]
                if frame[i] == 0x71:
                    if frame[i + 1] != memo:
                        _refuse("Memo index out of sequence.")
                    memo += 1
                    i += 2
                prev = op
                continue
            if op == 0x71:  # BINPUT
                if frame[i + 1] != memo:
                    _refuse("Memo index out of sequence.")
                if not fresh[prev]:
                    maybe_tuple = maybe_tuple or set()
                    maybe_tuple.add(memo)
                memo += 1
                i += 2
                continue
            a = arg[op]
            if a >= 0:
                i += 1 + a
                if not plain_op[op]:
                    plain = False
                if op != 0x80 and op != 0x95:  # PROTO, FRAME keep the top
                    prev = op
                continue
            if a == _REFUSED:
                _refuse(f"Opcode {op:#04x} is not accepted.", "forbidden")
            if a == _UNKNOWN:
                _refuse(f"Unknown opcode {op:#04x}.")
            # --- _SPECIAL ---
            if op == 0x47:  # BINFLOAT
                i += 9
                risky += 1
            elif op == 0x2E:  # STOP
                if i + 1 != n:
                    _refuse("Bytes after the end of the pickle.")
                if risky > MAX_PREDICTABLE_HASHES:
                    _refuse(f"{risky} floats, tuples, big ints or objects in one frame.", "complexity")
                return memo, plain and dicts <= 1
            elif op == 0x7D:  # EMPTY_DICT
                i += 1
                dicts += 1
            elif op == 0x68 or op == 0x6A or op == 0x67:  # BINGET, LONG_BINGET, GET
                plain = False
                if op == 0x68:
                    idx = frame[i + 1]
                    i += 2
                elif op == 0x6A:
                    idx = _u32(frame, i + 1)[0]
                    i += 5
                else:
                    end = frame.index(b"\n", i + 1)
                    idx = int(frame[i + 1 : end])
                    i = end + 1
                if idx >= memo or idx < 0:
                    _refuse("Memo reference to an entry never stored.")
                if maybe_tuple is not None and idx in maybe_tuple:
                    tuple_refs += 1
                    if tuple_refs > MAX_TUPLE_REFS:
                        _refuse("Too many references to shared tuples or big ints.", "complexity")
                    prev = _TUPLE_MARK
                else:
                    prev = _NONE_MARK
                continue
            elif op == 0x32:  # DUP: one more reference to the top of the stack, as GET makes
                i += 1
                plain = False
                if not fresh[prev]:
                    tuple_refs += 1
                    if tuple_refs > MAX_TUPLE_REFS:
                        _refuse("Too many references to shared tuples or big ints.", "complexity")
                continue  # the top of the stack is unchanged
            elif op == 0x72 or op == 0x70 or op == 0x94:  # LONG_BINPUT, PUT, MEMOIZE
                if op == 0x72:
                    idx = _u32(frame, i + 1)[0]
                    i += 5
                elif op == 0x70:
                    end = frame.index(b"\n", i + 1)
                    idx = int(frame[i + 1 : end])
                    i = end + 1
                else:
                    idx = memo
                    i += 1
                if idx != memo:
                    _refuse("Memo index out of sequence.")
                if not fresh[prev]:
                    maybe_tuple = maybe_tuple or set()
                    maybe_tuple.add(memo)
                memo += 1
                continue  # the top of the stack is unchanged
            elif op in _NO_ARG_RISKY:  # tuples, FROZENSET, REDUCE, NEWOBJ(_EX), OBJ, BUILD
                i += 1
                risky += 1
                plain = False
            elif op == 0x63 or op == 0x69:  # GLOBAL, INST: two text lines
                i = frame.index(b"\n", frame.index(b"\n", i + 1) + 1) + 1
                risky += op == 0x69
                plain = False
            elif op == 0x49 or op == 0x4C or op == 0x46 or op == 0x53 or op == 0x56:  # one text line
                end = frame.index(b"\n", i + 1)
                # FLOAT always; INT/LONG from 17 characters (>= 10**16 > 2**53)
                if op == 0x46:
                    risky += 1
                elif op == 0x49 or op == 0x4C:
                    if end - i > 17:
                        risky += 1
                        plain = plain and end - i <= 22  # keep ints below 2**64 plain
                else:
                    plain = False  # STRING, UNICODE: rare, let the full normalization look
                i = end + 1
            elif op == 0x8A or op == 0x55 or op == 0x43 or op == 0x8C:  # 1-byte counted
                size = frame[i + 1]
                if op == 0x8A and size >= 8:
                    risky += 1
                    plain = plain and size <= 8
                elif op == 0x55 or op == 0x43:  # SHORT_BINSTRING, SHORT_BINBYTES: bytes
                    plain = False
                i += 2 + size
            elif op == 0x54 or op == 0x8B:  # BINSTRING, LONG4: signed 4-byte count
                size = _i32(frame, i + 1)[0]
                if size < 0:
                    _refuse("Negative byte count.")
                risky += op == 0x8B and size >= 8
                plain = False
                i += 5 + size
            elif op == 0x42:  # BINBYTES: unsigned 4-byte count
                i += 5 + _u32(frame, i + 1)[0]
                plain = False
            elif op == 0x8D or op == 0x8E or op == 0x96:  # BINUNICODE8, BINBYTES8, BYTEARRAY8
                i += 9 + _u64(frame, i + 1)[0]
                plain = plain and op == 0x8D
            else:  # pragma: no cover - the table and this chain agree
                _refuse(f"Opcode {op:#04x} not handled.")
            prev = op
    except (IndexError, ValueError, struct.error):
        # Ran off the end (no STOP), a short count or an unparsable index.
        _refuse("Pickle data is truncated or unreadable.")


# The fast path of _scan: a C-speed tokenizer (``re``) for the opcodes a typical protocol-1
# record uses. Every token starts with its opcode byte and has an exact length (a BINUNICODE of
# length L < 256 is one of 256 alternatives, one per L), so the
# possessive repeat consumes exactly the op sequence the C unpickler will read. Within this
# subset there is no memo GET, no LONG_BINPUT/PUT (BINPUT indices are < 256, so the memo stays
# under 512 slots), no tuple, no call, no global, no int of 2**55 or more; the only objects with
# predictable hashes are BINFLOATs, and a frame of at most _FAST_MAX_FRAME bytes cannot hold more
# than MAX_PREDICTABLE_HASHES of them (9 bytes each). Strings of 256 bytes or more are skipped
# in Python between two matches. Anything else falls back to _scan_exact.
def _short_str_token(op: bytes) -> bytes:
    # sre tries the 256 branches in order but rejects each on its first literal byte; this flat
    # form measured faster than a two-level (high nibble first) dispatch.
    return (
        re.escape(op)
        + b"(?:"
        + b"|".join(re.escape(bytes([n, 0, 0, 0])) + b".{%d}" % n for n in range(256))
        + b")"
    )


_FAST_TOKEN_RE = (
    b"(?:"
    + b"|".join(
        [
            _short_str_token(b"X"),  # BINUNICODE, length < 256
            rb"q.",  # BINPUT
            rb"K.",  # BININT1
            rb"N",  # NONE
            rb"G.{8}",  # BINFLOAT
            rb"J.{4}",  # BININT
            rb"M..",  # BININT2
            rb"L-?[0-9]{1,16}L\n",  # LONG (text), < 10**16
            rb"\}|\(|u|s|\]|a|e|\x88|\x89",  # EMPTY_DICT MARK SETITEMS SETITEM EMPTY_LIST APPEND(S) bools
            rb"\x80[\x01-\x05]",  # PROTO
        ]
    )
    + b")*+"
)
# The commonest frame of all, recognised whole: the record dict (EMPTY_DICT, optional BINPUT,
# MARK ... SETITEMS, STOP) holding scalar tokens only: no container, tuple or memo GET inside,
# so the values are plain and the dict needs no normalizing. Checked on opcodes, not on raw
# bytes: a message like "[000042] ..." holds "]" and "}" bytes inside its BINUNICODE.
_PLAIN_RECORD = re.compile(
    rb"\}(?:q.)?\((?:"
    + b"|".join(
        [
            _short_str_token(b"X"),
            rb"q.",
            rb"K.",
            rb"N",
            rb"G.{8}",
            rb"J.{4}",
            rb"M..",
            rb"L-?[0-9]{1,16}L\n",
            rb"\x88|\x89",
        ]
    )
    + rb")*+u\.",
    re.DOTALL,
).fullmatch
_FAST_TOKENS = re.compile(_FAST_TOKEN_RE, re.DOTALL).match
_loads = pickle.loads
_FAST_WHOLE = re.compile(_FAST_TOKEN_RE + rb"\.", re.DOTALL).fullmatch  # ... then STOP, last byte
_FAST_MAX_FRAME = 9 * MAX_PREDICTABLE_HASHES


def _scan(frame: bytes) -> tuple[int, bool]:
    """Check that ``frame`` is safe to give the C unpickler; see ``_scan_exact`` for the result."""
    n = len(frame)
    if n <= _FAST_MAX_FRAME:
        if _PLAIN_RECORD(frame) is not None:
            return 0, True
        if _FAST_WHOLE(frame) is not None:
            # plain: one dict op at most (the record) and no list op, so values are scalars.
            return 0, frame.count(b"}") <= 1 and b"]" not in frame
        pos = 0
        while True:
            pos = _FAST_TOKENS(frame, pos).end()  # type: ignore[union-attr]  # always matches
            if pos >= n:
                break
            op = frame[pos]
            if op == 0x2E and pos + 1 == n:  # STOP, last byte
                return 0, frame.count(b"}") <= 1 and b"]" not in frame
            if op != 0x58 or pos + 5 > n:  # not a long BINUNICODE: let the exact walk decide
                break
            pos += 5 + _u32(frame, pos + 1)[0]
    return _scan_exact(frame)


# --- normalization --------------------------------------------------------------------------

_NoneType = type(None)
_PLAIN = frozenset({float, bool, _NoneType})
_FIXED_SIZE = frozenset({_dt.datetime, _dt.date, _dt.time, _dt.timedelta})


def _type_name(t: type) -> str:
    module = t.__module__
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


class PickleFormat:
    """Parses ``SocketHandler`` frame bodies (pickle protocol <= 5, usually 1) safely.

    Attributes:
        placeholders: running count of values replaced by an ``"<unpicklable NAME>"`` string.
    """

    __slots__ = ("_chars", "_nodes", "_reader", "_unpickler", "placeholders")

    def __init__(self) -> None:
        self.placeholders = 0
        self._reader = _FrameReader()
        self._unpickler: RestrictedUnpickler | None = None
        self._nodes = 0
        self._chars = 0

    def parse(self, frame: bytes) -> RecordDict:
        """Turn one frame body into a record dict of plain data.

        Args:
            frame: the body of one frame, without its length header.

        Returns:
            The record's ``__dict__`` with every key a str and every value plain data.

        Raises:
            ProtocolError: ``malformed``, ``forbidden``, ``complexity`` (see ``_scan``) or
                ``not_a_dict`` if the pickle is not a dict. Never anything else.
        """
        if len(frame) <= _FAST_MAX_FRAME and _PLAIN_RECORD(frame) is not None:
            # A flat dict of scalars (see _PLAIN_RECORD): no opcode in it can import, call or
            # build anything, and its memo stays under 256 entries, so the stdlib's C loads()
            # is safe here and skips our reader and find_class machinery.
            try:
                obj = _loads(frame)
            except Exception as exc:
                raise ProtocolError(
                    f"Cannot unpickle frame: {type(exc).__name__}: {exc!s:.200}", reason="malformed"
                ) from None
            try:
                "".join(obj)  # every key a str, checked at C speed
            except TypeError:
                return self._normalize(obj)
            return obj  # type: ignore[no-any-return]
        memo_size, plain = _scan(frame)
        reader = self._reader
        # Protocol 4 and 5 frames get an unpickler of their own: their MEMOIZE numbers memo
        # entries from the C unpickler's memo length, which memo.clear() does not reset (and
        # assigning a fresh memo crashes CPython 3.11), so on a reused unpickler their GETs
        # miss ("Memo value not found"). The stock SocketHandler pickles with protocol 1.
        fresh = frame[1:2] >= b"\x04"
        unpickler = None if fresh else self._unpickler
        if unpickler is None:
            unpickler = RestrictedUnpickler(reader)
            if not fresh:
                self._unpickler = unpickler
        reader.data = frame
        reader.pos = 0
        unpickler.new_classes_left = _MAX_NEW_PLACEHOLDERS_PER_FRAME
        try:
            obj = unpickler.load()
        except Exception as exc:
            self._unpickler = None  # its input buffer may hold the rest of this frame
            reader.data = b""
            reason = "forbidden" if isinstance(exc, _Forbidden) else "malformed"
            raise ProtocolError(
                f"Cannot unpickle frame: {type(exc).__name__}: {exc!s:.200}", reason=reason
            ) from None
        consumed = reader.pos
        reader.data = b""  # do not keep the frame alive until the next one
        if consumed != len(frame) or memo_size > _MAX_REUSED_MEMO:
            self._unpickler = None  # (_scan already ensures STOP is the last byte)
        else:
            unpickler.memo.clear()  # no memo entry may leak into the next frame
        if type(obj) is not dict:
            raise ProtocolError(f"Frame holds a {_type_name(type(obj))}, not a dict.", reason="not_a_dict")
        if plain:
            # Scalar values, each pickled once, no int over 2**64 (see _scan): if the keys are
            # all str the dict is already normalized. join() is a C-speed check of that.
            try:
                "".join(obj)
            except TypeError:
                pass
            else:
                return obj
        return self._normalize(obj)

    # Hot path: ~25 keys, nearly all str/int/float/None values.
    def _normalize(self, d: dict[Any, Any]) -> RecordDict:
        self._nodes = MAX_NORMALIZED_NODES
        chars = MAX_NORMALIZED_CHARS
        plain = _PLAIN
        out: RecordDict = {}
        for k, v in d.items():
            if type(k) is not str:
                self._chars = chars
                k = self._key(k, 1)
                chars = self._chars
            t = type(v)
            if t is str:
                chars -= len(v)
                if chars < 0:
                    v = "<too large: str>"
            elif t is int:
                if not -_INT_LIMIT < v < _INT_LIMIT:
                    v = "<too large: int>"
            elif t not in plain:
                self._chars = chars
                v = self._value(v, 1)
                chars = self._chars
            out[k] = v
        return out

    def _key(self, k: object, depth: int) -> str:
        t = type(k)
        if t is int:
            return str(k) if -_INT_LIMIT < k < _INT_LIMIT else "<too large: int>"  # type: ignore[operator]
        if t in _PLAIN:
            return str(k)
        v = self._value(k, depth)
        return v if type(v) is str else str(v)

    def _value(self, v: object, depth: int) -> Any:
        t = type(v)
        if t is str:
            self._chars -= len(v)  # type: ignore[arg-type]
            return v if self._chars >= 0 else "<too large: str>"
        if t is int:
            return v if -_INT_LIMIT < v < _INT_LIMIT else "<too large: int>"  # type: ignore[operator]
        if t in _PLAIN:
            return v
        if t is dict or t is list or t is tuple or t is set or t is frozenset:
            size: int = len(v)  # type: ignore[arg-type]
            self._nodes -= 1 + size
            if self._nodes < 0 or depth > MAX_NORMALIZED_DEPTH:
                return f"<too large: {t.__name__}>"
            depth += 1
            if t is dict:
                out: dict[str, Any] = {}
                for k, x in v.items():  # type: ignore[attr-defined]
                    if type(k) is not str:
                        k = self._key(k, depth)
                    out[k] = self._value(x, depth)
                return out
            items = [self._value(x, depth) for x in v]  # type: ignore[attr-defined]
            return tuple(items) if t is tuple else items
        self._nodes -= 1
        if self._nodes < 0:
            return f"<too large: {_type_name(t)}>"
        if t is bytes:
            self._chars -= len(v)  # type: ignore[arg-type]
            return v if self._chars >= 0 else "<too large: bytes>"
        if t in _FIXED_SIZE:
            return v
        if t is Decimal:
            if self._chars <= 0:
                return "<too large: decimal.Decimal>"
            self._chars -= len(str(v))
            return v if self._chars >= 0 else "<too large: decimal.Decimal>"
        if t is uuid.UUID:
            i = getattr(v, "int", None)
            if type(i) is int and 0 <= i < 1 << 128:
                return uuid.UUID(int=i)  # a fresh, fully initialized copy
            return self._placeholder("uuid.UUID")
        if t is _dt.timezone:
            return str(v)
        if isinstance(v, Placeholder):
            return self._placeholder(v.global_name)
        if isinstance(v, type):
            if issubclass(v, Placeholder):
                return self._placeholder(v.global_name)
            return self._placeholder(_type_name(v))
        return self._placeholder(_type_name(t))

    def _placeholder(self, name: str) -> str:
        self.placeholders += 1
        return f"<unpicklable {name}>"
