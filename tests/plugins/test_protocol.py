"""htsec.plugins.protocol: HTCondor's multi-file plugin interface, judged through its files
(the -classad answer, the -infile/-outfile ads, the exit status), set up as a starter does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import classad2
import pytest

from htsec.errors import TransferFailed
from htsec.plugins.protocol import Transfer, check_url_path, parse_requests, result_ad
from tests.conftest import REPO
from tests.plugins.conftest import PREFILL, input_ads, results, run_plugin, starter_files
from tests.plugins.copyplugin import CopyPlugin

COPY = "tests.plugins.copyplugin"

# The attributes and types the starter keeps (src/condor_starter.V6.1/filter.cpp).
RESULT_TYPES = {
    "TransferSuccess": bool,
    "TransferError": str,
    "TransferProtocol": str,
    "TransferType": str,
    "TransferFileName": str,
    "TransferFileBytes": int,
    "TransferTotalBytes": int,
    "TransferStartTime": int,
    "TransferEndTime": int,
    "ConnectionTimeSeconds": float,
    "TransferUrl": str,
}
ERROR_TYPES = {
    "ErrorType": str,
    "PluginVersion": str,
    "PluginLaunched": bool,
    "FailedName": str,
    "FailureType": str,
    "FailedServer": str,
    "ShouldRefresh": bool,
    "ErrorCode": int,
    "ErrorString": str,
    "Retryable": int,
}
STANZAS = {
    "Parameter": {"PluginVersion", "PluginLaunched"},
    "Resolution": {"FailedName", "FailureType"},
    "Contact": {"FailedServer"},
    "Authorization": {"FailedServer", "FailureType", "ShouldRefresh"},
    "Specification": {"FailedServer"},
    "Transfer": {"FailedServer", "FailureType"},
}


def check_result_shape(ad: object) -> None:
    """One result ad as HTCondor's starter reads it."""
    assert isinstance(ad, classad2.ClassAd)
    for name, typ in RESULT_TYPES.items():
        if name == "TransferError" and ad["TransferSuccess"]:
            continue
        assert isinstance(ad[name], typ) and type(ad[name]) is not (bool if typ is int else None)
    assert ad["TransferType"] in ("download", "upload")
    assert isinstance(ad["DeveloperData"], classad2.ClassAd)
    if ad["TransferSuccess"]:
        assert "TransferErrorData" not in ad
        return
    errors = ad["TransferErrorData"]
    assert isinstance(errors, list) and errors
    for err in errors:
        assert isinstance(err, classad2.ClassAd)
        for name in err.keys():  # noqa: SIM118 (classad2 keys are case-insensitive views)
            assert isinstance(err[name], ERROR_TYPES[name]), name
        assert STANZAS[err["ErrorType"]] <= set(err.keys())
        assert {"ErrorCode", "ErrorString"} <= set(err.keys())


def test_classad_answer_in_old_syntax() -> None:
    proc = run_plugin(COPY, "-classad")
    assert proc.returncode == 0, proc.stderr
    ad = classad2.parseOne(proc.stdout, classad2.ParserType.Old)
    assert ad["MultipleFileSupport"] is True
    assert ad["PluginType"] == "FileTransfer"
    assert ad["ProtocolVersion"] == 4
    assert ad["SupportedMethods"] == "copy"
    assert ad["PluginVersion"] == "test-1"
    assert all(" = " in line for line in proc.stdout.splitlines())


@pytest.mark.parametrize(
    "args", [[], ["-infile"], ["-infile", "x"], ["-outfile", "y"], ["-bogus", "-infile", "x"]]
)
def test_bad_arguments_exit_1_with_usage(args: list[str]) -> None:
    proc = run_plugin(COPY, *args)
    assert proc.returncode == 1
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_download_every_file_reported_in_order_even_after_a_failure(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    files = [
        (f"copy://{src}", str(tmp_path / "a")),
        (f"copy://{src}?fail=Specification", str(tmp_path / "b")),
        (f"copy://{tmp_path / 'missing'}", str(tmp_path / "c")),
        (f"copy://{src}?crash=1", str(tmp_path / "d")),
        (f"copy://{src}", str(tmp_path / "e")),
    ]
    infile, outfile = starter_files(tmp_path, input_ads(*files))
    proc = run_plugin(COPY, "-infile", str(infile), "-outfile", str(outfile))
    assert proc.returncode == 1
    ads = results(outfile)
    assert [(a["TransferUrl"], a["TransferFileName"]) for a in ads] == files
    assert [a["TransferSuccess"] for a in ads] == [True, False, False, False, True]
    for ad in ads:
        check_result_shape(ad)
    assert ads[0]["TransferFileBytes"] == 300_000
    assert ads[0]["TransferProtocol"] == "copy" and ads[0]["TransferType"] == "download"
    assert (tmp_path / "a").read_bytes() == src.read_bytes() == (tmp_path / "e").read_bytes()
    assert ads[1]["TransferErrorData"][0]["ErrorType"] == "Specification"
    assert "No such file" in ads[2]["TransferError"]
    assert ads[3]["TransferError"] == "internal error in the plugin (ZeroDivisionError)"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_upload_and_exit_0_when_all_move(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("result\n")
    infile, outfile = starter_files(
        tmp_path, input_ads((f"copy://{tmp_path / 'remote.txt'}", str(tmp_path / "out.txt")))
    )
    proc = run_plugin(COPY, "-infile", str(infile), "-outfile", str(outfile), "-upload")
    assert proc.returncode == 0, proc.stderr
    (ad,) = results(outfile)
    check_result_shape(ad)
    assert ad["TransferSuccess"] is True and ad["TransferType"] == "upload"
    assert (tmp_path / "remote.txt").read_text() == "result\n"


def test_outfile_written_from_its_start_and_never_truncated(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    infile, outfile = starter_files(tmp_path, input_ads((f"copy://{src}", str(tmp_path / "a"))))
    proc = run_plugin(COPY, "-infile", str(infile), "-outfile", str(outfile))
    assert proc.returncode == 0
    data = outfile.read_bytes()
    assert len(data) == len(PREFILL)
    assert data.startswith(b"\n    [") or data.lstrip().startswith(b"[")
    assert data.rstrip(b" ").endswith(b"]\n")
    assert len(results(outfile)) == 1


def test_outfile_longer_than_the_prefill_grows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    n = 120
    files = [(f"copy://{src}", str(tmp_path / f"f{i}")) for i in range(n)]
    infile, outfile = starter_files(tmp_path, input_ads(*files))
    assert run_plugin(COPY, "-infile", str(infile), "-outfile", str(outfile)).returncode == 0
    assert outfile.stat().st_size > len(PREFILL)
    assert len(results(outfile)) == n


def test_each_result_is_written_when_its_file_is_done(tmp_path: Path) -> None:
    """A later file's transfer sees the earlier file's result already in the output file."""
    src = tmp_path / "src"
    src.write_text("x")
    infile, outfile = starter_files(
        tmp_path,
        input_ads((f"copy://{src}", str(tmp_path / "a")), (f"copy://{src}", str(tmp_path / "b"))),
    )
    seen: list[int] = []

    class Peek(CopyPlugin):
        def get(self, url: str, path: Path, transfer: Transfer) -> None:
            seen.append(len(results(outfile)))
            super().get(url, path, transfer)

    assert Peek().run(str(infile), str(outfile), upload=False) == 0
    assert seen == [0, 1]


def test_v4_plugin_data_applies_to_the_file_ads_after_it() -> None:
    text = (
        '[ Url = "copy:///a"; LocalFileName = "/x/a" ]'
        '[ PluginData = [ Cache = "general" ] ]'
        '[ Url = "copy:///b"; LocalFileName = "/x/b" ]'
        '[ Protocol = "copy"; PluginData = [ Cache = "copy-only" ] ]'
        '[ Url = "copy:///c"; LocalFileName = "/x/c" ]'
        '[ Url = "other:///d"; LocalFileName = "/x/d" ]'
        '[ Url = "copy:///e"; LocalFileName = "/x/e"; PluginData = [ Cache = "own" ] ]'
    )
    reqs, problem = parse_requests(text.encode())
    assert problem == ""
    got = [(r.url[-1], r.plugin_data["Cache"] if r.plugin_data else None) for r in reqs]
    assert got == [
        ("a", None),
        ("b", "general"),
        ("c", "copy-only"),
        ("d", "general"),
        ("e", "own"),
    ]


def test_attribute_names_are_case_insensitive_and_expressions_evaluate() -> None:
    reqs, problem = parse_requests(b'[ URL = strcat("copy:", "///a"); localfilename = "/x" ]')
    assert problem == "" and (reqs[0].url, reqs[0].path, reqs[0].problem) == ("copy:///a", "/x", "")


def test_expressions_cannot_reach_other_attributes() -> None:
    """Url = a30 with a_i = strcat(a_{i-1}, a_{i-1}) would take 2^30 steps: refused, not run."""
    chain = " ".join(f"a{i} = strcat(a{i - 1}, a{i - 1});" for i in range(1, 31))
    text = f'[ a0 = "x"; {chain} Url = a30; LocalFileName = "/x" ]'
    t0 = time.monotonic()
    (req,), _ = parse_requests(text.encode())
    assert time.monotonic() - t0 < 5
    assert req.problem == "the input ad's Url is not a string"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[ LocalFileName = "/x" ; Foo = 1]', "the input ad has no Url"),
        ('[ Url = "copy:///a" ]', "the input ad has no LocalFileName"),
        ('[ Url = 5; LocalFileName = "/x" ]', "the input ad's Url is not a string"),
        (
            '[ Url = "copy:///a"; LocalFileName = undefined ]',
            "the input ad's LocalFileName is not a string",
        ),
        ('[ Url = ""; LocalFileName = "/x" ]', "the input ad's Url is empty or too long"),
    ],
)
def test_bad_file_ads_are_answered_not_moved(tmp_path: Path, text: str, problem: str) -> None:
    infile, outfile = starter_files(tmp_path, text)
    assert CopyPlugin().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    check_result_shape(ad)
    assert ad["TransferError"] == problem
    assert ad["TransferErrorData"][0]["ErrorType"] == "Parameter"


def test_malformed_input_moves_nothing_and_answers_everything(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    text = input_ads((f"copy://{src}", str(tmp_path / "a"))) + "[ Url = ; ] trailing"
    infile, outfile = starter_files(tmp_path, text)
    proc = run_plugin(COPY, "-infile", str(infile), "-outfile", str(outfile))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    ads = results(outfile)
    assert len(ads) == 2
    assert [a["TransferSuccess"] for a in ads] == [False, False]
    assert ads[0]["TransferUrl"] == f"copy://{src}"
    assert "input ad 2: not a ClassAd" in ads[0]["TransferError"]
    assert not (tmp_path / "a").exists()


def test_oversized_input_is_refused(tmp_path: Path) -> None:
    infile, outfile = starter_files(tmp_path, "")
    with open(infile, "wb") as f:
        f.truncate(17 * 1024 * 1024)
    assert CopyPlugin().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "larger than" in ad["TransferError"]


def test_missing_input_file_is_reported(tmp_path: Path) -> None:
    outfile = tmp_path / "out"
    outfile.write_bytes(PREFILL)
    proc = run_plugin(COPY, "-infile", str(tmp_path / "nope"), "-outfile", str(outfile))
    assert proc.returncode == 1
    (ad,) = results(outfile)
    assert ad["TransferSuccess"] is False and "cannot read the input file" in ad["TransferError"]


def test_wrong_method_is_a_parameter_error(tmp_path: Path) -> None:
    infile, outfile = starter_files(tmp_path, input_ads(("box://x", str(tmp_path / "a"))))
    assert CopyPlugin().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert ad["TransferError"] == "this plugin handles copy, not box://"


def test_sigterm_mid_transfer_leaves_no_partial_file_and_reports_all(tmp_path: Path) -> None:
    """The starter's timeout kills the plugin with SIGTERM: the file being written is removed,
    it and every later file get a failed result ad."""
    src = tmp_path / "src"
    src.write_bytes(os.urandom(200_000))
    files = [
        (f"copy://{src}?sleep=30", str(tmp_path / "a")),
        (f"copy://{src}", str(tmp_path / "b")),
    ]
    infile, outfile = starter_files(tmp_path, input_ads(*files))
    proc = subprocess.Popen(
        [sys.executable, "-m", COPY, "-infile", str(infile), "-outfile", str(outfile)], cwd=REPO
    )
    deadline = time.monotonic() + 20
    while not any(p.name.endswith(".part") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 1
    ads = results(outfile)
    assert [a["TransferSuccess"] for a in ads] == [False, False]
    assert "interrupted by SIGTERM" in ads[0]["TransferError"]
    assert "interrupted" in ads[1]["TransferError"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".plugin.in", ".plugin.in.out", "src"]


def test_failed_attempts_before_success_or_failure_are_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("x")
    files = [
        (f"copy://{src}?retry=1", str(tmp_path / "a")),
        (f"copy://{src}?retry=1&fail=Authorization", str(tmp_path / "b")),
    ]
    infile, outfile = starter_files(tmp_path, input_ads(*files))
    assert CopyPlugin().run(str(infile), str(outfile), upload=False) == 1
    ok, bad = results(outfile)
    assert ok["TransferSuccess"] is True and ok["DeveloperData"]["TransferTries"] == 2
    assert [e["ErrorType"] for e in bad["TransferErrorData"]] == ["Contact", "Authorization"]
    check_result_shape(bad)


def test_result_ad_strings_survive_quotes_and_newlines() -> None:
    t = Transfer('copy:///a"b', '/x\n"y', upload=False)
    text = result_ad(
        t, start=1, end=2, error=TransferFailed('bad "x"\nnext'), version="1", local_host="h"
    )
    ad = classad2.parseOne(text, classad2.ParserType.New)
    assert ad["TransferUrl"] == 'copy:///a"b' and ad["TransferFileName"] == '/x\n"y'
    assert ad["TransferError"] == 'bad "x"\nnext'


@pytest.mark.parametrize(
    "path",
    [
        "/a/../b",
        "/a/%2e%2e/b",
        "/a/%2E%2e%2Fb",
        "/a/%252e%252e/b",
        "/..",
        "/a/.",
        "/a\\..\\b",
        "/a/%00",
        "/%25252e%25252e/x",
    ],
)
def test_check_url_path_refuses_traversal(path: str) -> None:
    with pytest.raises(TransferFailed) as info:
        check_url_path(path)
    assert info.value.kind == "Parameter"


@pytest.mark.parametrize("path", ["/a/b", "/a/..b/c", "/a/b..", "/user/alice/x%20y.txt", "/"])
def test_check_url_path_allows_ordinary_paths(path: str) -> None:
    check_url_path(path)
