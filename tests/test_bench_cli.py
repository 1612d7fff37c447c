"""The main job's command line (python -m persistent_topk.bench), on the CPU: argument parsing, the
progress line, which record a run may write, the table and plot, the CPU subset run through main(),
and --decode-step's hand-off. No GPU is needed; the whole file runs in a few seconds."""
import io
import json
import sys

import pytest
import torch

from persistent_topk import bench, suite

TINY = "decode-uniform-b1-4k"  # the suite's smallest case: 1 row of 4096 logits


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def run_main(argv, capsys):
    rc = bench.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def fake_result(name, **extra):
    r = {"name": name, "rows": 1, "stride": 4096, "k": 2048, "dtype": "float32", "us": 5.0, "noplan_us": 7.0,
         "plan_us": 2.0, "torch_us": 40.0, "torch_sorted_us": 55.0, "speedup": 8.0, "floor_us": 3.0,
         "time_over_floor": 1.67, "public_time_over_floor": 1.5, "goal_time_over_floor": 1.2}
    r.update(extra)
    return r


# ---- argument parsing ------------------------------------------------------------------------------
def test_defaults_are_todays_run():
    args = bench.parse_args([])
    assert args.modes == ("plan", "noplan") == bench.DEFAULT_MODES
    assert args.dtype is None and args.k is None and args.cases is None
    assert not args.no_progress and not args.decode_step and not args.sweep and args.reps == bench.DEFAULT_REPS


@pytest.mark.parametrize("argv, modes", [
    (["--modes", "plan,noplan,page-table"], ("plan", "noplan", "page-table")),
    (["--modes", "page-table", "plan"], ("plan", "page-table")),
    (["--modes", "plan,plan"], ("plan",)),
    (["--modes", "noplan,plan"], ("plan", "noplan")),
])
def test_modes_are_parsed_in_canonical_order(argv, modes):
    assert bench.parse_args(argv).modes == modes


@pytest.mark.parametrize("argv, message", [
    (["--modes", "plan,fast"], "unknown mode"),
    (["--modes", "noplan,page-table"], "plan is needed"),
    (["--dtype", "float64"], "invalid choice"),
    (["--k", "0"], "must be >= 1"),
    (["--k", "many"], "invalid"),
    (["--reps", "5"], "--reps must be >= 30"),
    (["--sweep", "--k", "512"], "--k applies to the suite only"),
    (["--decode-step", "--dtype", "bfloat16", "--modes", "plan"], "--dtype, --modes apply to the suite only"),
    (["--sweep", "--decode-step"], "not allowed with"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_overrides_parse():
    args = bench.parse_args(["--dtype", "bfloat16", "--k", "512", "--no-progress", "--cases", "b1", "b8"])
    assert (args.dtype, args.k, args.no_progress, args.cases) == ("bfloat16", 512, True, ["b1", "b8"])


# ---- the progress line -----------------------------------------------------------------------------
def test_format_progress():
    assert bench.format_progress(7, 21, "mixed-b64-1k..128k") == "[ 7/21] mixed-b64-1k..128k ..."
    assert bench.format_progress(21, 21, "x") == "[21/21] x ..."
    assert bench.format_progress(1, 1, "x") == "[1/1] x ..."
    assert bench.format_progress(3, 100, "x", 12.4) == "[  3/100] x ... 12 s"


def test_progress_only_on_a_terminal_and_never_with_no_progress():
    assert bench.progress_enabled(False, FakeTerminal())
    assert not bench.progress_enabled(True, FakeTerminal())
    assert not bench.progress_enabled(False, io.StringIO())
    closed = FakeTerminal()
    closed.close()
    bench.progress_enabled(False, closed)  # must not raise


def test_progress_rewrites_one_line_and_clears_it():
    stream = FakeTerminal()
    progress = bench.Progress(2, True, stream)
    progress.show("first-case")
    progress.show("b")
    progress.clear()
    text = stream.getvalue()
    assert text.startswith("\r[1/2] first-case ...")
    assert "\r[2/2] b ..." in text
    lines = text.split("\r")
    assert lines[-1] == "" and set(lines[-2]) == {" "}  # cleared with spaces, cursor back at column 0
    assert len(lines[-2]) == len(lines[1])               # as wide as the widest line shown
    assert "\n" not in text                              # never scrolls


def test_disabled_progress_writes_nothing():
    stream = FakeTerminal()
    progress = bench.Progress(3, False, stream)
    progress.show("a")
    progress.clear()
    assert stream.getvalue() == "" and progress.index == 1


# ---- which record a run writes ---------------------------------------------------------------------
TOTAL = 21


@pytest.mark.parametrize("argv, selected, stem, reasons", [
    ([], TOTAL, "latest", set()),
    (["--modes", "plan,noplan"], TOTAL, "latest", set()),
    (["--cases", "decode"], 9, "latest-partial", {"cases"}),
    (["--cases", "-"], TOTAL, "latest", set()),  # a --cases that keeps every case is a full run (as before)
    (["--dtype", "float32"], TOTAL, "latest-partial", {"dtype"}),
    (["--k", "2048"], TOTAL, "latest-partial", {"k"}),
    (["--modes", "plan"], TOTAL, "latest-partial", {"modes"}),
    (["--modes", "plan,noplan,page-table"], TOTAL, "latest-partial", {"modes"}),
    (["--k", "512", "--dtype", "bfloat16", "--cases", "b1"], 2, "latest-partial", {"cases", "dtype", "k"}),
])
def test_partial_runs_never_write_latest(argv, selected, stem, reasons):
    partial = bench.partial_reasons(bench.parse_args(argv), selected, TOTAL)
    assert set(partial) == reasons
    assert bench.record_stem(partial) == stem
    json.dumps(partial)  # goes into the record as it is


def test_overrides_replace_every_case_and_leave_the_suite_alone():
    data = suite.load_suite()
    cases = data["cases"]
    before = json.dumps(cases)
    changed = bench.apply_overrides(cases, "float16", 64)
    assert json.dumps(cases) == before
    assert all(suite.case_k(c, data) == 64 and suite.case_dtype(c) == torch.float16 for c in changed)
    assert [c["name"] for c in changed] == [c["name"] for c in cases]
    assert bench.apply_overrides(cases) == cases


# ---- table, columns, plot ------------------------------------------------------------------------
def test_op_columns_keep_todays_order():
    assert bench.op_columns(bench.DEFAULT_MODES) == ["us", "noplan_us", "plan_us"]
    assert bench.op_columns(("plan", "noplan", "page-table")) == ["us", "noplan_us", "plan_us", "page_table_us"]
    assert bench.op_columns(("plan",)) == ["us", "plan_us"]


def test_table_shows_the_columns_that_were_measured(capsys):
    results = [fake_result("a", page_table_us=9.5), fake_result("b", page_table_us=10.25)]
    for r in results:
        del r["noplan_us"]
    bench.print_table(results, "title")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "title"
    header = out[1].split()
    assert header[:6] == ["case", "us", "plan_us", "page_table_us", "torch_us", "torch_sorted_us"]
    assert "noplan_us" not in header and "9.50" in out[2] and "10.25" in out[3]
    line = bench.case_line(results[0])
    assert "page table     9.50" in line and "no plan" not in line


def test_default_table_header_is_unchanged(capsys):
    bench.print_table([fake_result("a")], "t")
    assert capsys.readouterr().out.splitlines()[1] == (
        f"{'case':30s} {'us':>8s} {'noplan_us':>9s} {'plan_us':>7s} {'torch_us':>8s} {'torch_sorted_us':>15s} "
        f"{'speedup':>7s} {'floor_us':>8s} {'x_floor':>7s} {'public_x_floor':>14s} {'goal_x_floor':>12s} "
        f"{'<=public':>8s}")


def test_plot_has_ours_torch_and_floor_on_a_log_scale(tmp_path):
    pytest.importorskip("matplotlib")
    plt = bench.pyplot()
    results = [fake_result("a"), fake_result("b", us=12.0, torch_us=300.0, floor_us=9.0)]
    fig, ax = bench.suite_figure(plt, results, "test device")
    try:
        labels = [c.get_label() for c in ax.containers]
        assert labels == ["torch.topk (masked, sorted=False)", "persistent_topk", "floor"]
        heights = [[bar.get_height() for bar in c] for c in ax.containers]
        assert heights == [[40.0, 300.0], [5.0, 12.0], [3.0, 9.0]]
        assert ax.get_yscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    finally:
        plt.close(fig)
    bench.plot_suite(results, tmp_path / "p.png", "test device", "k=64, float16")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_random_page_table_uses_distinct_pages():
    table = bench.random_page_table(3, 1000, 64, torch.Generator().manual_seed(1))
    assert table.dtype == torch.int32 and table.shape == (3, 16)
    assert sorted(table.flatten().tolist()) == list(range(48))


# ---- the CPU subset, through main() ----------------------------------------------------------------
def test_cpu_subset_says_so_in_its_first_line_and_writes_nothing(tmp_path, capsys):
    rc, out, _ = run_main(["--cpu", "--cases", TINY, "--k", "64", "--no-progress", "--out-dir", str(tmp_path)],
                          capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("CPU SUBSET ONLY (--cpu given): no GPU timing")
    assert "1 smallest suite case against torch.topk" in lines[0] and "nothing is written" in lines[0]
    assert len(lines) == 2 and TINY in lines[1] and "k=   64" in lines[1] and "values equal torch.topk" in lines[1]
    assert "ms plan" in lines[1] and "ms noplan" in lines[1] and "page-table" not in lines[1]
    assert list(tmp_path.iterdir()) == []


def test_cpu_subset_without_a_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, out, _ = run_main(["--cases", TINY, "--k", "16", "--no-progress", "--out-dir", str(tmp_path)], capsys)
    assert rc == 0 and out.splitlines()[0].startswith("CPU SUBSET ONLY (no CUDA device)")
    assert list(tmp_path.iterdir()) == []


def test_cpu_subset_runs_every_mode_with_overrides(tmp_path, capsys):
    rc, out, _ = run_main(["--cpu", "--cases", TINY, "--k", "100", "--dtype", "bfloat16", "--modes",
                           "plan,noplan,page-table", "--no-progress", "--out-dir", str(tmp_path)], capsys)
    assert rc == 0
    line = out.splitlines()[1]
    assert "bfloat16" in line and "k=  100" in line and "ms page-table" in line


def test_cpu_subset_progress_goes_to_a_terminal_stderr_only(monkeypatch, capsys):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert bench.main(["--cpu", "--cases", TINY, "--k", "8"]) == 0
    assert f"\r[1/1] {TINY} ..." in terminal.getvalue()
    assert "[1/1]" not in capsys.readouterr().out
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert bench.main(["--cpu", "--cases", TINY, "--k", "8", "--no-progress"]) == 0
    assert terminal.getvalue() == ""


def test_cpu_subset_with_no_matching_case(capsys):
    rc, out, _ = run_main(["--cpu", "--cases", "no-such-case", "--no-progress"], capsys)
    assert rc == 1 and out.splitlines()[0].startswith("CPU SUBSET ONLY") and "no suite case matches" in out


# ---- --decode-step -------------------------------------------------------------------------------
def test_decode_step_without_the_script_says_so_and_exits_2(tmp_path, capsys):
    args = bench.parse_args(["--decode-step", "--out-dir", str(tmp_path / "out")])
    assert bench.run_decode_step(args, roots=[tmp_path]) == 2
    assert "examples/dsa_decode.py is not in this checkout" in capsys.readouterr().err


def test_main_decode_step_exits_2_when_the_script_is_absent(monkeypatch, capsys):
    monkeypatch.setattr(bench, "decode_script", lambda roots=None: None)
    rc, _, err = run_main(["--decode-step"], capsys)
    assert rc == 2 and "is not in this checkout" in err


def test_decode_step_runs_the_script_with_bench_and_out(tmp_path):
    script = tmp_path / "repo" / "examples" / "dsa_decode.py"
    script.parent.mkdir(parents=True)
    script.write_text("import json, sys\n"
                      "out = sys.argv[sys.argv.index('--out') + 1]\n"
                      "open(out, 'w').write(json.dumps(sys.argv[1:]))\n"
                      "sys.exit(3 if '--bench' not in sys.argv else 0)\n")
    out_dir = tmp_path / "results"
    args = bench.parse_args(["--decode-step", "--out-dir", str(out_dir)])
    assert bench.run_decode_step(args, roots=[tmp_path / "nowhere", tmp_path / "repo"]) == 0
    record = out_dir / bench.DECODE_RECORD
    assert json.loads(record.read_text()) == ["--bench", "--out", str(record.resolve())]
