"""logsvc_client._spool against a model: any sequence of operations keeps the spool's promises."""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc_client._spool import DiskSpool, Spool

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.binary(max_size=40)),
        st.tuples(st.just("trim"), st.integers(0, 60)),
        st.tuples(st.just("drop"), st.none()),
        st.tuples(st.just("take"), st.tuples(st.integers(0, 60), st.integers(1, 9), st.integers(0, 100))),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=60,
)


def run(ops: list[tuple[str, object]], directory: Path | None) -> None:
    def open_spool() -> Spool:
        return DiskSpool(directory, 1000, 1 << 20) if directory else Spool(1000, 1 << 20)

    s = open_spool()
    model: dict[int, bytes] = {}  # seq -> payload: what must still be sent
    used: set[int] = set()
    for op, arg in ops:
        with s.cond:
            if op == "put":
                assert isinstance(arg, bytes)
                seq = s.put(arg, 0.0)
                assert seq not in used and all(seq > u for u in used)  # never reused, increasing
                used.add(seq)
                model[seq] = arg
            elif op == "trim":
                assert isinstance(arg, int)
                s.trim(arg)
                model = {q: p for q, p in model.items() if q > arg}
            elif op == "drop" and model:
                s.drop_oldest()
                del model[min(model)]
            elif op == "take":
                assert isinstance(arg, tuple)
                frm, count, budget = arg
                first, got = s.take(frm, count, budget)
                want = sorted(q for q in model if q >= frm)
                if not want:
                    assert got == []
                    continue
                assert first == want[0] and 1 <= len(got) <= count
                assert got == [model[first + k] for k in range(len(got))]  # consecutive seqs
                assert len(got) == 1 or sum(map(len, got)) <= budget
        if op == "reopen" and directory:
            s.close()
            s = open_spool()
        assert len(s) == len(model) and s.nbytes == sum(map(len, model.values()))
    s.close()


@given(OPS)
def test_memory_spool_matches_the_model(ops: list[tuple[str, object]]) -> None:
    run(ops, None)


@settings(max_examples=50, deadline=None)
@given(OPS)
def test_disk_spool_matches_the_model_across_reopens(ops: list[tuple[str, object]]) -> None:
    with TemporaryDirectory() as d:
        run(ops, Path(d))
