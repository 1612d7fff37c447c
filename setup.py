"""Builds persistent_topk._C (the CUDA kernels) when a CUDA build of torch and nvcc are present.

Without them the package installs CPU-only and says so; CUDA tensors then raise a clear error.
Targets sm_90a (Hopper) by default; TORCH_CUDA_ARCH_LIST adds more (e.g. "8.0;9.0a").
"""
import os

from setuptools import find_packages, setup

# Keep the build lean: one small .cu includes the kernel headers; ninja parallelises nothing else.
DEFAULT_ARCH = "9.0a"


def cuda_extension():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        print("persistent_topk: torch is not installed at build time; installing the CPU-only package")
        return [], {}
    if torch.version.cuda is None or CUDA_HOME is None:
        print("persistent_topk: no CUDA build of torch or no nvcc (CUDA_HOME); installing the CPU-only package")
        return [], {}
    archs = [a for a in os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(",", ";").split(";") if a.strip()]
    if DEFAULT_ARCH not in archs:
        archs.append(DEFAULT_ARCH)
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
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


ext_modules, cmdclass = cuda_extension()

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
