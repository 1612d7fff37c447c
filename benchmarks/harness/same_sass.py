"""Whether two csrc trees compile to the same machine code: for moves and renames that must not change
what runs, a proof stronger than a timing A/B and free of device time.

    python benchmarks/harness/same_sass.py BASE_CSRC [NEW_CSRC]     (NEW_CSRC defaults to ./csrc)
    e.g. mkdir -p /tmp/base && git archive HEAD csrc | tar -x -C /tmp/base
         python benchmarks/harness/same_sass.py /tmp/base/csrc

Compiles the float32 kernel (through benchmarks/harness/ctypes_harness.cu) and the bfloat16 and half
kernels for sm_90a with each tree, and compares every kernel's SASS bytes (the cubin's .text.*
sections) and ptxas's register and spill report. Exit status 0 when all are identical.
"""
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NVCC = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
FLAGS = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-gencode=arch=compute_90a,code=sm_90a", "-Xptxas=-v"]
# The 16-bit kernels, instantiated through the launch (whatever the kernels' template parameters).
HALF_KERNELS = """#include "launch.cuh"
template cudaError_t persistent_topk::launch_persistent_topk<__nv_bfloat16>(persistent_topk::Params,
    const persistent_topk::ResidentLimits&, bool, cudaStream_t);
template cudaError_t persistent_topk::launch_persistent_topk<__half>(persistent_topk::Params,
    const persistent_topk::ResidentLimits&, bool, cudaStream_t);
"""


def text_sections(cubin: Path) -> dict:
    """{section name: bytes} of the cubin's .text.* sections (ELF64, little-endian)."""
    data = cubin.read_bytes()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = data[headers[shstrndx][4]:headers[shstrndx][4] + headers[shstrndx][5]]
    sections = {}
    for h in headers:
        name = names[h[0]:names.index(b"\0", h[0])].decode()
        if name.startswith(".text."):
            sections[name] = data[h[4]:h[4] + h[5]]
    return sections


def build(csrc: Path, work: Path) -> tuple:
    """(sections, ptxas resource lines) of both translation units built against csrc."""
    half_tu = work / "half_kernels.cu"
    half_tu.write_text(HALF_KERNELS)
    sections, report = {}, []
    for name, source in (("f32", ROOT / "benchmarks/harness/ctypes_harness.cu"), ("half", half_tu)):
        cubin = work / f"{csrc.name}-{name}.cubin"
        done = subprocess.run([NVCC, *FLAGS, "-cubin", "-o", str(cubin), str(source), f"-I{csrc}"],
                              capture_output=True, text=True, check=True)
        report += [re.sub(r"_Z\w+", "", line) for line in done.stderr.splitlines()
                   if "registers" in line or "spill" in line]
        sections.update({f"{name}:{k}": v for k, v in text_sections(cubin).items()})
    return sections, report


def main() -> int:
    base = Path(sys.argv[1]).resolve()
    new = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT / "csrc"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        a, report_a = build(base, Path(tmp) / "a")
        b, report_b = build(new, Path(tmp) / "b")
    same = True
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        verdict = "same" if x == y else "DIFFERENT"
        same &= x == y
        print(f"{verdict:9s} {len(x or b''):7d} {len(y or b''):7d}  {name[:100]}")
    if report_a != report_b:
        same = False
        print("ptxas reports differ:\n  " + "\n  ".join(report_a) + "\n vs\n  " + "\n  ".join(report_b))
    print("identical machine code" if same else "machine code differs")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
