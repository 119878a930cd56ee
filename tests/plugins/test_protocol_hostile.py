"""htsec.plugins.protocol against hostile input files (hypothesis): whatever the bytes, the
plugin neither raises nor hangs, answers every file ad it read with a well-formed result ad,
and moves nothing when the file as a whole is bad."""

from __future__ import annotations

import tempfile
from pathlib import Path

import classad2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec.plugins.protocol import parse_requests
from tests.plugins.conftest import PREFILL, results
from tests.plugins.copyplugin import CopyPlugin
from tests.plugins.test_protocol import check_result_shape

values = st.one_of(
    st.text(max_size=40).map(lambda s: classad2.quote(s.replace("\x00", ""))),
    st.integers().map(str),
    st.sampled_from(
        [
            "true",
            "undefined",
            "error",
            "[ a = 1 ]",
            '{ 1, "x" }',
            "1 / 0",
            'strcat("copy:", "///nope")',
            "Url",
            "LocalFileName",
        ]
    ),
)
names = st.sampled_from(
    ["Url", "URL", "url", "LocalFileName", "localfilename", "PluginData", "Protocol", "Other"]
)
ads = st.lists(st.tuples(names, values), max_size=5).map(
    lambda attrs: "[ " + "; ".join(f"{n} = {v}" for n, v in attrs) + " ]"
)
junk = st.sampled_from(["", "]", "[", "[ a = ; ]", "garbage", "\x00", "\udcff", "[ a = 1 ] ]"])
documents = st.lists(st.one_of(ads, junk), max_size=8).map("\n".join)


def _file_ads(text: str) -> int:
    reqs, _ = parse_requests(text.encode("utf-8", errors="surrogateescape"))
    return len(reqs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_input_gets_one_well_formed_answer_per_file_ad(text: str) -> None:
    data = text.encode("utf-8", errors="surrogateescape")
    reqs, problem = parse_requests(data)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "in").write_bytes(data)
        (tmp / "out").write_bytes(PREFILL)
        code = CopyPlugin().run(str(tmp / "in"), str(tmp / "out"), upload=False)
        got = results(tmp / "out")
        assert code in (0, 1)
        assert len(got) == len(reqs) + (1 if problem else 0)
        for ad in got:
            check_result_shape(ad)
        # Nothing here names a readable source: nothing may succeed, nothing may appear.
        assert code == (1 if got else 0)
        assert sorted(p.name for p in tmp.iterdir()) == ["in", "out"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reqs, problem = parse_requests(data)
    assert isinstance(problem, str)
    for r in reqs:
        assert isinstance(r.url, str) and isinstance(r.path, str)
        assert r.problem or (r.url and r.path)
