"""setup.py's install rule (decide_build, find_nvcc, parse_arch_list), on the CPU, without building.

setup.py is imported with importlib under another name, so setup() does not run. The slow test (a real
`pip install --no-build-isolation --no-deps --target`) runs only with RUN_SLOW=1.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NVCC = "/usr/local/cuda/bin/nvcc"


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("persistent_topk_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decide(setup_py, *, torch_importable=True, torch_cuda="13.0", nvcc=NVCC, cuda_device=False, environ=None):
    return setup_py.decide_build(torch_importable=torch_importable, torch_cuda=torch_cuda, nvcc=nvcc,
                                 cuda_device=cuda_device, environ=environ or {})


def test_importing_setup_py_builds_nothing(setup_py):
    assert setup_py.__name__ == "persistent_topk_setup"
    assert callable(setup_py.decide_build) and callable(setup_py.main)


# ---- the decision --------------------------------------------------------------------------------
def test_no_torch_no_nvcc_is_cpu_only(setup_py):
    d = decide(setup_py, torch_importable=False, torch_cuda=None, nvcc=None)
    assert not d.cuda and "CPU-only" in d.note and d.archs == []


def test_cpu_torch_no_nvcc_is_cpu_only(setup_py):
    d = decide(setup_py, torch_cuda=None, nvcc=None)
    assert not d.cuda and "CPU-only" in d.note


def test_cuda_torch_no_nvcc_no_gpu_is_cpu_only(setup_py):
    # A CPU machine with PyPI's (CUDA) torch and no toolkit: nothing could use the kernels anyway.
    d = decide(setup_py, torch_cuda="13.0", nvcc=None, cuda_device=False)
    assert not d.cuda and "CPU-only" in d.note


def test_cuda_torch_with_gpu_but_no_nvcc_is_refused(setup_py):
    with pytest.raises(setup_py.BuildRefused, match="no nvcc.*CUDA_HOME.*PERSISTENT_TOPK_CPU_ONLY=1"):
        decide(setup_py, torch_cuda="13.0", nvcc=None, cuda_device=True)


def test_nvcc_without_torch_is_refused_with_no_build_isolation_advice(setup_py):
    # What `pip install .` with build isolation sees: the isolated env has setuptools and no torch.
    with pytest.raises(setup_py.BuildRefused) as info:
        decide(setup_py, torch_importable=False, torch_cuda=None, nvcc=NVCC)
    message = str(info.value)
    assert "pip install --no-build-isolation ." in message
    assert NVCC in message and "PERSISTENT_TOPK_CPU_ONLY=1" in message


def test_nvcc_with_cpu_torch_is_refused(setup_py):
    with pytest.raises(setup_py.BuildRefused, match="CPU build"):
        decide(setup_py, torch_cuda=None, nvcc=NVCC)


def test_cuda_torch_and_nvcc_build_the_kernels_for_sm90a(setup_py):
    for device in (False, True):  # CI compiles on a machine without a GPU
        d = decide(setup_py, torch_cuda="13.0", nvcc=NVCC, cuda_device=device)
        assert d.cuda and d.archs == ["9.0a"] and NVCC in d.note


@pytest.mark.parametrize("flag", ["1", "true", "YES", "on"])
def test_opt_out_env_var_wins_over_everything(setup_py, flag):
    environ = {"PERSISTENT_TOPK_CPU_ONLY": flag, "TORCH_CUDA_ARCH_LIST": "8.0"}
    for kwargs in ({"torch_cuda": "13.0", "nvcc": NVCC, "cuda_device": True},
                   {"torch_importable": False, "torch_cuda": None, "nvcc": NVCC},
                   {"torch_cuda": None, "nvcc": NVCC},
                   {"torch_cuda": "13.0", "nvcc": None, "cuda_device": True}):
        d = decide(setup_py, environ=environ, **kwargs)
        assert not d.cuda and "PERSISTENT_TOPK_CPU_ONLY" in d.note


@pytest.mark.parametrize("flag", ["0", "", "no"])
def test_opt_out_env_var_off_values_do_not_opt_out(setup_py, flag):
    d = decide(setup_py, environ={"PERSISTENT_TOPK_CPU_ONLY": flag})
    assert d.cuda


# ---- architectures -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch_list", ["8.0", "8.0;9.0a", "9.0a,8.6+PTX", "7.5 9.0"])
def test_arch_list_below_sm90_is_refused(setup_py, arch_list):
    with pytest.raises(setup_py.BuildRefused, match=r"below 9\.0.*Hopper \(sm_90a"):
        decide(setup_py, environ={"TORCH_CUDA_ARCH_LIST": arch_list})


def test_arch_list_names_the_offending_entries(setup_py):
    with pytest.raises(setup_py.BuildRefused) as info:
        decide(setup_py, environ={"TORCH_CUDA_ARCH_LIST": "8.0;8.9;9.0a"})
    assert "8.0, 8.9" in str(info.value) and "9.0a," not in str(info.value)


@pytest.mark.parametrize("arch_list, archs", [
    ("", ["9.0a"]),
    ("9.0a", ["9.0a"]),
    ("9.0", ["9.0", "9.0a"]),
    ("10.0a;12.0+PTX", ["10.0a", "12.0+PTX", "9.0a"]),
    (" 9.0a , 10.0f ", ["9.0a", "10.0f"]),
])
def test_arch_list_at_or_above_sm90_keeps_sm90a(setup_py, arch_list, archs):
    d = decide(setup_py, environ={"TORCH_CUDA_ARCH_LIST": arch_list})
    assert d.cuda and d.archs == archs


def test_arch_list_garbage_is_refused(setup_py):
    with pytest.raises(setup_py.BuildRefused, match="not a CUDA architecture"):
        decide(setup_py, environ={"TORCH_CUDA_ARCH_LIST": "hopper"})


# ---- finding nvcc (torch's order) ----------------------------------------------------------------
def test_find_nvcc_order(setup_py):
    present = {"/opt/cuda-a/bin/nvcc", "/opt/cuda-b/bin/nvcc", "/usr/local/cuda/bin/nvcc"}

    def exists(path):
        return path in present

    def which_none(_):
        return None

    def which_path(_):
        return "/conda/bin/nvcc"

    find = setup_py.find_nvcc
    assert find({"CUDA_HOME": "/opt/cuda-a", "CUDA_PATH": "/opt/cuda-b"}, which_path, exists) == "/opt/cuda-a/bin/nvcc"
    assert find({"CUDA_PATH": "/opt/cuda-b"}, which_path, exists) == "/opt/cuda-b/bin/nvcc"
    assert find({}, which_path, exists) == "/conda/bin/nvcc"
    assert find({}, which_none, exists) == "/usr/local/cuda/bin/nvcc"
    assert find({}, which_none, lambda path: False) is None


def test_find_nvcc_refuses_a_cuda_home_without_nvcc(setup_py):
    with pytest.raises(setup_py.BuildRefused, match="CUDA_HOME=/nowhere has no bin/nvcc"):
        setup_py.find_nvcc({"CUDA_HOME": "/nowhere"}, lambda _: "/usr/bin/nvcc", lambda path: False)


# ---- the script as pip runs it -------------------------------------------------------------------
def run_setup_py(env_updates):
    """setup.py run as __main__ (as pip runs it) by a python whose `import torch` fails, as in pip's
    isolated build environment, with setup() replaced by a stub that reports what it was given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PERSISTENT_TOPK_CPU_ONLY", "TORCH_CUDA_ARCH_LIST", "CUDA_PATH")}
    env.update(env_updates)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "setup.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


# Runs setup.py as __main__ with `import torch` failing, and with `setup()` replaced by a stub that
# reports what it was given (no build).
SCRIPT = r"""
import builtins, runpy, sys
real_import = builtins.__import__
def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise ImportError("No module named 'torch' (hidden by the test)")
    return real_import(name, *args, **kwargs)
builtins.__import__ = no_torch
import setuptools
def fake_setup(**kwargs):
    print("SETUP ext_modules=%d" % len(kwargs.get("ext_modules") or []))
setuptools.setup = fake_setup
path = sys.argv[1]
sys.argv = [path] + sys.argv[2:]
runpy.run_path(path, run_name="__main__")
"""


def test_setup_py_main_refuses_isolated_build_where_nvcc_exists(tmp_path):
    fake_home = tmp_path / "cuda"
    (fake_home / "bin").mkdir(parents=True)
    (fake_home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    result = run_setup_py({"CUDA_HOME": str(fake_home)})
    assert result.returncode != 0
    assert "cannot install" in result.stderr and "--no-build-isolation" in result.stderr
    assert "SETUP" not in result.stdout


def test_setup_py_main_opt_out_installs_cpu_only(tmp_path):
    fake_home = tmp_path / "cuda"
    (fake_home / "bin").mkdir(parents=True)
    (fake_home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    result = run_setup_py({"CUDA_HOME": str(fake_home), "PERSISTENT_TOPK_CPU_ONLY": "1"})
    assert result.returncode == 0, result.stderr
    assert "SETUP ext_modules=0" in result.stdout and "CPU-only" in result.stderr


# ---- optional: a real install ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="a real pip install takes minutes; RUN_SLOW=1 runs it")
def test_pip_install_no_build_isolation(tmp_path):
    """`pip install --no-build-isolation --no-deps --target` with this environment's torch: with CUDA torch
    and nvcc the installed package must hold the compiled kernels."""
    import shutil

    import torch

    target = tmp_path / "site"
    env = dict(os.environ)
    env.pop("PERSISTENT_TOPK_CPU_ONLY", None)
    if not env.get("CUDA_HOME") and os.path.isfile(NVCC):
        env["CUDA_HOME"] = "/usr/local/cuda"  # as setup.sh does
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                             "--target", str(target), str(ROOT)], env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    built = list((target / "persistent_topk").glob("_C*.so"))
    if torch.version.cuda is not None and (env.get("CUDA_HOME") or shutil.which("nvcc")):
        assert built, "CUDA torch and nvcc are here, but the installed package has no _C extension"
