"""tools/gpu_check.py, the GPU suite's harness, tested where CI runs: no GPU.

- The dry run: without a usable GPU ``--quick`` writes a result file saying so and exits 2 at once.
- The same step list end to end on the CPU stand-in for CuPy (``--emulator``, tests/kernels/emulator.py),
  each step narrowed to a small subset: every step runs, passes and is recorded.
- The runner itself, with plain commands as steps: a step past its budget is killed with its whole
  process group and recorded as timed out, the suite moves on, the result file holds each step as soon as
  it ended, the overall budget cuts the last steps, a signal stops the run cleanly, a missing tool is
  recorded as missing, pytest outcomes and sanitizer reports are parsed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def only_result(out: Path) -> dict:
    files = sorted(out.glob("gpu-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def make_suite(gc, tmp_path, *, deadline=None, emulator=False):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    result = {"suite": "test", "steps": []}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tools"), str(ROOT)]))
    suite = gc.Suite(
        result,
        tmp_path / "out" / "result.json",
        deadline=deadline,
        base_env=env,
        emulator=emulator,
        workers=1,
        has_timeout_plugin=False,
        work=work,
    )
    return suite, result


def py(code: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(code)]


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state or "\nState:\tX" in state


# ----------------------------------------------------------------------------------------------
# the command line: no GPU, and the emulator
# ----------------------------------------------------------------------------------------------
def test_quick_without_a_gpu_writes_a_result_and_exits_nonzero(tmp_path):
    """A CuPy that cannot be imported stands for a machine without a GPU (also where CuPy is installed)."""
    block = tmp_path / "block" / "cupy"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('cupy blocked by the test: no GPU here')\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block.parent), str(ROOT)]), "GPUNN_COMMIT": "abc123"}
    # 60 s: the dry run's limit (it takes about a second); a hang fails here
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    res = only_result(out)
    assert res["status"] == "no usable GPU"
    gpu = res["machine"]["gpu"]
    assert gpu["usable"] is False and "cupy blocked by the test" in gpu["error"]
    assert [s["name"] for s in res["steps"]] == ["kernel-tests", "cupy-suites", "memcheck", "racecheck", "bench"]
    assert all(s["status"] == "not_run" for s in res["steps"])
    for p in (ROOT / "kernels").glob("*.cu"):
        assert res["kernels_sha256"][f"kernels/{p.name}"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert res["commit"]["commit"]  # git's, or GPUNN_COMMIT's when there is no .git
    assert res["profile"] == "quick" and res["budget_s"] == 480
    assert "no usable GPU" in proc.stdout and "wrote " in proc.stdout
    # a second run the same day writes beside the first, never over it
    first = sorted(out.glob("gpu-*.json"))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    both = sorted(out.glob("gpu-*.json"))
    assert len(both) == 2 and first[0] in both and any(p.stem.endswith("-no-gpu-2") for p in both), both


def test_list_and_bad_arguments():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [
        "kernel-tests",
        "cupy-suites",
        "memcheck",
        "racecheck",
        "bench",
    ]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "unknown step" in proc.stderr


def test_quick_budgets_fit_the_window(gc):
    """The budgets are the contract the README states: the steps of --quick sum to at most the overall
    budget (8 minutes), which itself leaves the 10-minute command limit room."""
    steps = gc.quick_steps()
    assert sum(s.budget for s in steps) + gc.WRITE_RESERVE_S <= gc.QUICK_BUDGET_S <= 480
    assert {s.name for s in gc.full_steps()} >= {"tests-numpy", "tests-cupy", "memcheck", "racecheck", "bench"}


def test_readme_states_the_quick_budgets(gc):
    """The README's table for the 15-minute window gives each step's budget as the script has it."""
    readme = (ROOT / "README.md").read_text()
    for step in gc.quick_steps():
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{step.name}` |")), None)
        assert row is not None, f"README has no row for step {step.name}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"{step.budget:.0f} s" and cells[3] == step.estimate, (step.name, cells)
    assert f"| all | | {gc.QUICK_BUDGET_S:.0f} s |" in readme


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator uses ucontext (Linux)")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++20 compiler (g++)")
def test_every_quick_step_runs_end_to_end_on_the_emulator(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GPUNN_TEST_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--emulator", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    res = only_result(out)
    steps = {s["name"]: s for s in res["steps"]}
    report = proc.stdout[-3000:] + json.dumps(
        {k: (v.get("status"), v.get("tail", "")[-1500:]) for k, v in steps.items()}, indent=1
    )
    assert proc.returncode == 0, report
    assert res["status"] == "passed" and res["emulator"] is True and res["budget_s"] == 4 * 480
    assert res["machine"]["gpu"]["device"] == "gpunn kernel emulator"
    assert list(steps) == ["kernel-tests", "cupy-suites", "memcheck", "racecheck", "bench"]
    if importlib.util.find_spec("pytest_benchmark") is None:  # recorded as missing, not fatal
        assert steps.pop("bench")["status"] == "missing"
    for name, s in steps.items():
        assert s["status"] == "passed", (name, s.get("tail"))
        assert s["counts"]["passed"] > 0 and s["counts"]["failed"] == 0, (name, s["counts"])
        assert s["seconds"] <= s["budget_s"]
    assert steps["cupy-suites"]["env"]["GPUNN_TEST_BACKEND"] == "cupy"
    for name in ("memcheck", "racecheck"):
        assert steps[name]["env"]["GPUNN_KERNEL_LINEINFO"] == "1"
        assert any("emulator" in n for n in steps[name]["notes"])
        assert steps[name]["events"], "the plugin's pool switch did not run"
    if "bench" not in steps:
        return
    bench = steps["bench"]
    ops = {b["op"] for b in bench["benchmarks"]}
    assert {"linear_relu_fwdbwd", "cross_entropy", "sgd_step", "adam_step"} <= ops, ops
    if importlib.util.find_spec("torch") is not None:  # the training step is validated against torch
        assert "mlp_step" in ops
    for b in bench["benchmarks"]:
        assert b["rounds"] == len(b["data"]) >= 1 and b["min"] > 0
    assert bench["raw"]["gpunn_bench"]["quick_subset"] is True
    versions = res["kernel_versions"]
    if versions and "versions" in versions:  # every version of every op in the table is timed
        timed = {(b["op"], b["kernel_version"]) for b in bench["benchmarks"]}
        for op, bench_op in (
            ("softmax_cross_entropy", "cross_entropy"),
            ("sgd_step", "sgd_step"),
            ("adam_step", "adam_step"),
            ("linear_act", "linear_relu_fwdbwd"),
        ):
            for v in versions["versions"].get(op, ()):
                assert (bench_op, v) in timed, (op, v, sorted(timed, key=str))
    assert "wrote " in proc.stdout and "bench (min time" in proc.stdout


# ----------------------------------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------------------------------
def test_a_step_over_budget_is_killed_with_its_group_and_each_step_is_saved_when_it_ends(gc, tmp_path):
    pids = tmp_path / "pids"
    sleeper = gc.Step(
        "sleeper",
        "sleeps past its budget",
        "command",
        1.5,
        command=py(f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "120"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
    """),
    )
    # the second step reads the result file while it runs: the first step must be in it already
    reader = gc.Step(
        "reader",
        "reads the result file",
        "command",
        30,
        command=py(f"""
        import json, sys
        res = json.load(open({str(tmp_path / "out" / "result.json")!r}))
        names = [(s["name"], s["status"]) for s in res["steps"]]
        sys.exit(0 if names == [("sleeper", "timed_out")] and res["running"]["step"] == "reader" else 3)
    """),
    )
    suite, result = make_suite(gc, tmp_path)
    suite.run([sleeper, reader])
    first, second = result["steps"]
    assert first["status"] == "timed_out" and first["exit_code"] is None
    assert second["status"] == "passed", second
    leader, child = (int(v) for v in pids.read_text().split())
    for pid in (leader, child):
        for _ in range(50):  # the kill is synchronous; give init a moment to reap the orphan
            if process_gone(pid):
                break
            time.sleep(0.1)
        assert process_gone(pid), f"process {pid} of the killed step still runs"
    on_disk = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [s["status"] for s in on_disk["steps"]] == ["timed_out", "passed"]
    assert "running" not in on_disk
    assert not list((tmp_path / "out").glob(".result.json.*")), "a temporary file was left behind"


def test_the_overall_budget_cuts_the_last_steps(gc, tmp_path):
    suite, result = make_suite(gc, tmp_path, deadline=time.monotonic() + gc.WRITE_RESERVE_S + 4)
    long = gc.Step("long", "would take 60 s", "command", 60, command=py("import time; time.sleep(60)"))
    after = gc.Step("after", "never starts", "command", 10, command=py("pass"))
    suite.run([long, after])
    first, second = result["steps"]
    assert first["status"] == "timed_out" and "overall budget" in first["note"] and first["budget_s"] < 60
    assert second["status"] == "not_run" and "overall budget" in second["note"]


def test_a_signal_ends_the_running_step_and_skips_the_rest(gc, tmp_path):
    suite, result = make_suite(gc, tmp_path)
    long = gc.Step("long", "runs until stopped", "command", 120, command=py("import time; time.sleep(120)"))
    after = gc.Step("after", "never starts", "command", 10, command=py("pass"))
    timer = threading.Timer(1.0, suite.interrupt, args=(15, None))  # what SIGTERM's handler does
    timer.start()
    try:
        suite.run([long, after])
    finally:
        timer.cancel()
    assert [s["status"] for s in result["steps"]] == ["interrupted", "not_run"]
    assert suite.interrupted == "SIGTERM"


def test_a_step_that_cannot_start_is_an_error_and_the_suite_goes_on(gc, tmp_path):
    suite, result = make_suite(gc, tmp_path)
    suite.run(
        [
            gc.Step("broken", "no such program", "command", 10, command=[str(tmp_path / "no-such-program")]),
            gc.Step("ok", "runs", "command", 30, command=py("pass")),
        ]
    )
    assert [s["status"] for s in result["steps"]] == ["error", "passed"]
    assert "no-such-program" in result["steps"][0]["note"]


def test_missing_optional_tools_are_recorded_not_fatal(gc, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "find_tool", lambda name: None)
    suite, result = make_suite(gc, tmp_path)
    steps = [
        gc.Step("memcheck", "needs compute-sanitizer", "sanitizer", 10, tool="memcheck", args=["tests"]),
        gc.Step("ok", "runs", "command", 30, command=py("pass")),
    ]
    suite.run(steps)
    assert [s["status"] for s in result["steps"]] == ["missing", "passed"]
    assert "compute-sanitizer" in result["steps"][0]["note"]


def test_a_pytest_step_records_counts_failures_and_skips(gc, tmp_path):
    test_file = tmp_path / "t" / "test_sample.py"
    test_file.parent.mkdir()
    test_file.write_text(
        textwrap.dedent("""
        import pytest

        def test_ok():
            assert 1 + 1 == 2

        def test_bad():
            assert 2 + 2 == 5, "arithmetic is broken"

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        def test_error(broken):
            pass
    """)
    )
    suite, result = make_suite(gc, tmp_path)
    suite.run([gc.Step("sample", "a sample test file", "pytest", 120, args=[str(test_file)])])
    (rec,) = result["steps"]
    assert rec["status"] == "failed" and rec["exit_code"] == 1
    assert rec["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1, "xfailed": 0, "xpassed": 0, "total": 4}
    messages = {f["test"].split("::")[-1]: f["message"] for f in rec["failures"]}
    assert "arithmetic is broken" in messages["test_bad"] and "fixture broke" in messages["test_error"]
    assert rec["unfinished"] == []
    assert len(rec["skip_reasons"]) == 1 and "not today" in rec["skip_reasons"][0]


def test_a_killed_pytest_step_keeps_the_tests_that_finished(gc, tmp_path):
    test_file = tmp_path / "t" / "test_hang.py"
    test_file.parent.mkdir()
    test_file.write_text(
        textwrap.dedent("""
        import time

        def test_a_first():
            pass

        def test_b_fails():
            assert False, "seen before the kill"

        def test_c_hangs():
            time.sleep(120)

        def test_d_never_runs():
            pass
    """)
    )
    suite, result = make_suite(gc, tmp_path)
    suite.run([gc.Step("hang", "hangs in its third test", "pytest", 15, args=[str(test_file)])])
    (rec,) = result["steps"]
    assert rec["status"] == "timed_out"
    assert rec["counts"]["passed"] == 1 and rec["counts"]["failed"] == 1 and rec["counts"]["total"] == 2
    assert "seen before the kill" in rec["failures"][0]["message"]
    assert [n.split("::")[-1] for n in rec["unfinished"]] == ["test_c_hangs"]


def test_a_sanitizer_step_wraps_pytest_and_records_the_findings(gc, tmp_path, monkeypatch):
    """The non-emulated sanitizer path, with a stand-in for compute-sanitizer that runs the program it is
    given and reports one memcheck error in the --log-file it is given."""
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys
        args, opts = sys.argv[1:], {{}}
        while args[0].startswith("--"):
            opts[args[0]], args = args[1], args[2:]
        rc = subprocess.call(args)
        with open(opts["--log-file"], "w") as f:
            f.write("========= COMPUTE-SANITIZER\\n========= Invalid __global__ read of size 4 bytes\\n"
                    "=========     at sce_warp_v1_f32+0x40 in kernels/softmax_cross_entropy.cu:120\\n"
                    "========= ERROR SUMMARY: 1 error\\n")
            f.write(f"tool={{opts['--tool']}} pytest_exit={{rc}}\\n")
        sys.exit(int(opts["--error-exitcode"]))
    """)
    )
    fake.chmod(0o755)
    monkeypatch.setattr(gc, "find_tool", lambda name: str(fake) if name == "compute-sanitizer" else None)
    test_file = tmp_path / "t" / "test_one.py"
    test_file.parent.mkdir()
    test_file.write_text("def test_ok():\n    assert True\n")
    suite, result = make_suite(gc, tmp_path)
    suite.run([gc.Step("memcheck", "memcheck", "sanitizer", 120, tool="memcheck", args=[str(test_file)])])
    (rec,) = result["steps"]
    assert rec["command"].startswith(f"{fake} --tool memcheck --error-exitcode 99")
    assert rec["status"] == "failed" and rec["exit_code"] == 99
    assert rec["counts"]["passed"] == 1
    san = rec["sanitizer"]
    assert san["tool"] == "memcheck" and san["errors"] == 1
    assert any("softmax_cross_entropy.cu:120" in line for line in san["findings"])
    assert "tool=memcheck pytest_exit=0" in san["log_tail"]


def test_sanitizer_reports_are_parsed(gc):
    memcheck = textwrap.dedent("""\
        ========= COMPUTE-SANITIZER
        ========= Invalid __global__ write of size 4 bytes
        =========     at sgd_step_v1_f32+0x1a0 in /work/kernels/optim.cu:57
        =========     by thread (5,0,0) in block (0,0,0)
        =========     Address 0x7f0000000400 is out of bounds
        ========= ERROR SUMMARY: 1 error
        ========= COMPUTE-SANITIZER
        ========= ERROR SUMMARY: 2 errors
    """)
    got = gc.sanitizer_findings(memcheck)
    assert got["errors"] == 3 and got["error_summaries"] == [1, 2]  # one summary per watched process
    assert any("optim.cu:57" in line for line in got["findings"])
    assert not any("SUMMARY" in line or line.strip("= ") == "" for line in got["findings"])
    assert gc.sanitizer_findings("========= ERROR SUMMARY: 0 errors\n")["errors"] == 0
    assert gc.sanitizer_findings("no sanitizer output at all\n")["errors"] is None
    race = "========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warning)\n"
    got = gc.sanitizer_findings(race)
    assert got["errors"] == 2 and got["racecheck"] == {"hazards": 3, "errors": 2, "warnings": 1}
    # a tool that prints both lines is not counted twice
    assert gc.sanitizer_findings(race + "========= ERROR SUMMARY: 2 errors\n")["errors"] == 2


def test_lineinfo_switch_reaches_the_kernel_compile_options(monkeypatch):
    from gpunn.backend import kernels

    monkeypatch.delenv("GPUNN_KERNEL_LINEINFO", raising=False)
    assert "-lineinfo" not in kernels.compile_options("optim")
    monkeypatch.setenv("GPUNN_KERNEL_LINEINFO", "1")
    for name in kernels.KERNEL_FILES:
        opts = kernels.compile_options(name)
        assert opts[-1] == "-lineinfo" and opts[:-1] == kernels.BASE_OPTIONS + kernels.EXTRA_OPTIONS.get(name, ())


def test_bench_peers_compute_in_plain_float32():
    """bench/conftest.py turns TF32 off in PyTorch (matmul and cuDNN) when it loads."""
    pytest.importorskip("torch")
    code = (
        "import torch; torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True; "
        "import bench.conftest as c; "
        "print(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, "
        "torch.get_float32_matmul_precision(), c.TORCH_FLOAT32['cudnn_allow_tf32'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "highest", "False"]


def test_the_report_reads_a_result_whose_bench_step_was_killed(tmp_path):
    """bench.report takes pytest-benchmark's JSON from the result file, or, when the bench step was killed
    before pytest-benchmark wrote it, the per-benchmark records the plugin wrote as each one ended."""
    from bench import report

    info = {"op": "cross_entropy", "size": "mlp 200x10", "impl": "gpunn-cupy", "role": "gpunn"}
    res = {
        "suite": "gpunn gpu-check",
        "command": "python3 tools/gpu_check.py --quick",
        "commit": {"commit": "abc"},
        "steps": [
            {"name": "kernel-tests", "status": "passed"},
            {
                "name": "bench",
                "status": "timed_out",
                "benchmarks": [
                    {
                        "bench": "bench/test_ops.py::test_cross_entropy[mlp 200x10-gpunn]",
                        "min": 2e-5,
                        "median": 3e-5,
                        "rounds": 7,
                        "extra_info": info,
                        "data": [2e-5] * 7,
                    }
                ],
            },
        ],
    }
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(res))
    (entry,) = report.entries(report.load(str(path)))
    assert entry["op"] == "cross_entropy" and entry["t"] == 2e-5 and entry["rounds"] == 7


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator uses ucontext (Linux)")
def test_sigterm_to_the_harness_still_leaves_a_complete_file(tmp_path):
    """What a command limit's `timeout -s TERM` does: the running step is killed, the file is written, and
    the harness exits non-zero on its own."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--emulator", "--steps", "cupy-suites,bench", "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(600):  # wait until the first step runs (the file says so), at most 60 s
            files = list(out.glob("gpu-*.json"))
            if files and '"running": {' in files[0].read_text():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the harness never started its first step")
        proc.send_signal(15)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout
    res = only_result(out)
    assert res["status"] == "interrupted (SIGTERM)"
    got = {s["name"]: s["status"] for s in res["steps"]}
    assert got == {
        "kernel-tests": "skipped",
        "cupy-suites": "interrupted",
        "memcheck": "skipped",
        "racecheck": "skipped",
        "bench": "not_run",
    }, got
    assert "wrote " in stdout
