"""Builds persistent_topk._C (the CUDA kernels) with torch.utils.cpp_extension.

The install rule (decide_build below; tests/test_install.py checks every branch):

* PERSISTENT_TOPK_CPU_ONLY=1: a CPU-only package, whatever the machine has (said on stderr).
* nvcc found (torch's order: $CUDA_HOME, $CUDA_PATH, nvcc on PATH, /usr/local/cuda/bin/nvcc): the kernels
  are built, or the install fails with a message that says why and what to do. It fails when torch is
  not importable in the build environment (pip's build isolation hides the environment's own torch:
  install with ``pip install --no-build-isolation .``), when torch is a CPU build, when CUDA_HOME names a
  directory without bin/nvcc, or when TORCH_CUDA_ARCH_LIST names an architecture below 9.0. A compile
  error is an install error, never a fallback to CPU-only.
* No nvcc, but a CUDA build of torch that sees a GPU: the install fails (install the CUDA toolkit or set
  CUDA_HOME), since a CPU-only package on a GPU machine is never what was meant.
* Otherwise (no nvcc, and no torch, a CPU torch, or a CUDA torch on a machine without a GPU): a CPU-only
  package, said on stderr. CUDA tensors then raise one clear error that says how to build the kernels.

The kernels need Hopper or newer (thread-block clusters, distributed shared memory, st.async with
mbarriers): the build always targets sm_90a (H100/H200); TORCH_CUDA_ARCH_LIST may add architectures at
or above 9.0 and is refused with anything below it.

This file can be imported (importlib) without building anything: setup() runs only as __main__, which is
how pip, setuptools.build_meta and ``python setup.py`` run it.
"""
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import List, Mapping, Optional

# Always built: Hopper with its arch-specific features (H100, H200).
DEFAULT_ARCH = "9.0a"
# Thread-block clusters and distributed shared memory start with compute capability 9.0.
MIN_ARCH = (9, 0)
# Set to 1 (true/yes/on) to install the CPU-only package even where the kernels could be built.
CPU_ONLY_ENV = "PERSISTENT_TOPK_CPU_ONLY"
# How to build against the environment's own torch (build isolation hides it).
NO_ISOLATION_COMMAND = "pip install --no-build-isolation ."
# One TORCH_CUDA_ARCH_LIST entry: 9.0, 9.0a, 10.0f, 9.0+PTX, ... (torch also accepts a space separator).
ARCH_RE = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")


class BuildRefused(Exception):
    """The install cannot give what this machine needs; the message says why and what to do."""


@dataclass
class BuildDecision:
    cuda: bool                                      # build the CUDA kernels
    note: str                                       # one line for the build log (stderr)
    archs: List[str] = field(default_factory=list)  # TORCH_CUDA_ARCH_LIST entries (when cuda)


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_nvcc(environ: Mapping[str, str], which=shutil.which, exists=os.path.isfile) -> Optional[str]:
    """The nvcc torch.utils.cpp_extension would use, in its order: $CUDA_HOME/bin/nvcc, $CUDA_PATH/bin/nvcc,
    nvcc on PATH, /usr/local/cuda/bin/nvcc. None when there is none.

    Raises BuildRefused when CUDA_HOME (or CUDA_PATH) is set but holds no bin/nvcc: torch would build with
    that directory and fail later, less clearly."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = environ.get(var)
        if home:
            nvcc = os.path.join(home, "bin", "nvcc")
            if exists(nvcc):
                return nvcc
            raise BuildRefused(f"{var}={home} has no bin/nvcc. Point {var} at a CUDA toolkit (e.g. "
                               f"/usr/local/cuda), or unset it, or set {CPU_ONLY_ENV}=1 for a CPU-only package.")
    on_path = which("nvcc")
    if on_path:
        return on_path
    default = "/usr/local/cuda/bin/nvcc"
    return default if exists(default) else None


def parse_arch_list(value: Optional[str]) -> List[str]:
    """TORCH_CUDA_ARCH_LIST's entries plus DEFAULT_ARCH; BuildRefused if an entry is not an architecture
    or is below 9.0 (the kernels use clusters and distributed shared memory: Hopper, sm_90a, or newer)."""
    entries = [a for a in re.split(r"[;,\s]+", value or "") if a]
    low = []
    for entry in entries:
        match = ARCH_RE.match(entry)
        if not match:
            raise BuildRefused(f"TORCH_CUDA_ARCH_LIST: {entry!r} is not a CUDA architecture (expected entries "
                               f"like 9.0a or 10.0)")
        if (int(match.group(1)), int(match.group(2))) < MIN_ARCH:
            low.append(entry)
    if low:
        raise BuildRefused(
            f"TORCH_CUDA_ARCH_LIST={value!r} names {', '.join(low)}, below 9.0: the kernels use thread-block "
            f"clusters and distributed shared memory, which need Hopper (sm_90a, H100/H200) or newer. "
            f"Leave TORCH_CUDA_ARCH_LIST unset (sm_90a is always built) or list only architectures >= 9.0.")
    if DEFAULT_ARCH not in entries:
        entries.append(DEFAULT_ARCH)
    return entries


def decide_build(*, torch_importable: bool, torch_cuda: Optional[str], nvcc: Optional[str],
                 cuda_device: bool, environ: Mapping[str, str], torch_error: str = "") -> BuildDecision:
    """Whether to build the CUDA kernels, from what the build environment has (see the module docstring).

    Args:
        torch_importable: ``import torch`` works in the build environment.
        torch_cuda: torch.version.cuda (None for a CPU build of torch, or when torch is not importable).
        nvcc: find_nvcc()'s answer.
        cuda_device: torch.cuda.is_available() (False when torch is not importable).
        environ: the environment (CPU_ONLY_ENV, TORCH_CUDA_ARCH_LIST).
        torch_error: why ``import torch`` failed, for the message.
    Returns a BuildDecision; raises BuildRefused with the message to show when the install must fail.
    """
    opt_out = f"set {CPU_ONLY_ENV}=1 to install the CPU-only package on purpose"
    if env_flag(environ, CPU_ONLY_ENV):
        return BuildDecision(False, f"persistent_topk: {CPU_ONLY_ENV} is set: installing the CPU-only package "
                                    "(no CUDA kernels; CUDA tensors will raise)")
    if nvcc is not None:
        if not torch_importable:
            why = f" ({torch_error})" if torch_error else ""
            raise BuildRefused(
                f"nvcc is here ({nvcc}) but torch is not importable in the build environment{why}. The CUDA "
                f"kernels must be built against this environment's own CUDA build of torch, which pip's build "
                f"isolation hides: install torch first, then `{NO_ISOLATION_COMMAND}` (or "
                f"`pip install --no-build-isolation -e .`); or {opt_out}.")
        if torch_cuda is None:
            raise BuildRefused(
                f"nvcc is here ({nvcc}) but the build environment's torch is a CPU build (torch.version.cuda is "
                f"None), and the kernels link against a CUDA build of torch. Install a CUDA build of torch and "
                f"run `{NO_ISOLATION_COMMAND}`; or {opt_out}.")
        archs = parse_arch_list(environ.get("TORCH_CUDA_ARCH_LIST"))
        return BuildDecision(True, f"persistent_topk: building the CUDA kernels with {nvcc} against torch "
                                   f"(CUDA {torch_cuda}) for {';'.join(archs)}", archs)
    if torch_cuda is not None and cuda_device:
        raise BuildRefused(
            f"torch is a CUDA build (CUDA {torch_cuda}) and sees a GPU, but there is no nvcc (looked at "
            f"$CUDA_HOME, $CUDA_PATH, PATH and /usr/local/cuda/bin/nvcc), so the kernels cannot be built. "
            f"Install the CUDA toolkit and set CUDA_HOME (e.g. CUDA_HOME=/usr/local/cuda); or {opt_out}.")
    what = "torch is not importable in the build environment" if not torch_importable else \
        "torch is a CPU build" if torch_cuda is None else "no nvcc and no GPU"
    return BuildDecision(False, f"persistent_topk: no nvcc ({what}): installing the CPU-only package (no CUDA "
                                f"kernels; CUDA tensors will raise). For the kernels: a CUDA build of torch, the "
                                f"CUDA toolkit (CUDA_HOME), and `{NO_ISOLATION_COMMAND}`.")


def probe_torch():
    """(importable, torch.version.cuda, torch.cuda.is_available(), why import failed)."""
    try:
        import torch
    except Exception as error:  # ImportError, or a broken install (OSError loading its libraries)
        return False, None, False, f"{type(error).__name__}: {error}"
    cuda = torch.version.cuda
    try:
        device = cuda is not None and torch.cuda.is_available()
    except Exception:
        device = False
    return True, cuda, device, ""


def cuda_extension(decision: BuildDecision):
    """The extension and build command of a CUDA decision."""
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

    if CUDA_HOME is None:  # decide_build found nvcc where torch looks, so this should not happen
        raise BuildRefused("torch.utils.cpp_extension found no CUDA_HOME; set CUDA_HOME=/usr/local/cuda "
                           "(the toolkit whose bin/nvcc to use)")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(decision.archs)
    here = os.path.dirname(os.path.abspath(__file__))
    ext = CUDAExtension(
        name="persistent_topk._C",
        sources=["csrc/persistent_topk.cu"],
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args={
            "cxx": ["-O3"],
            "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo",
                     "-Xptxas=-v,-warn-spills"],
        },
    )
    return [ext], {"build_ext": BuildExtension}


def main():
    from setuptools import find_packages, setup

    try:
        if env_flag(os.environ, CPU_ONLY_ENV):  # no torch import: the opt-out never depends on it
            importable, cuda, device, error, nvcc = False, None, False, "", None
        else:
            importable, cuda, device, error = probe_torch()
            nvcc = find_nvcc(os.environ)
        decision = decide_build(torch_importable=importable, torch_cuda=cuda, nvcc=nvcc, cuda_device=device,
                                environ=os.environ, torch_error=error)
        print(decision.note, file=sys.stderr)
        ext_modules, cmdclass = cuda_extension(decision) if decision.cuda else ([], {})
    except BuildRefused as refused:
        sys.exit(f"persistent_topk: cannot install: {refused}")

    setup(
        name="persistent_topk",
        version="0.1.0",
        description="Exact, deterministic per-row top-k for DeepSeek-style sparse attention (DSA) decode",
        packages=find_packages(include=["persistent_topk"]),
        package_data={"persistent_topk": ["dsa_suite.json", "dsa_targets.json"]},
        python_requires=">=3.9",
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )


if __name__ == "__main__":
    main()
