"""Logit distributions that broke public top-k kernels (DESIGN-NOTES.md), for CPU and GPU tests.

Every generator fills a whole [rows, stride] tensor; the tests put garbage (NaN, huge values) past
each row's length so a kernel that reads beyond it gets caught.
"""
import torch

FLOAT32_MAX = 3.4028234663852886e38


def _uniform(shape, g):
    return torch.rand(shape, generator=g, dtype=torch.float64)


def normal(shape, g):
    return torch.randn(shape, generator=g, dtype=torch.float64)


def ties(shape, g):
    """Few distinct values: the threshold bin is mostly ties, lowest index must win."""
    return torch.randint(0, 4, shape, generator=g).double()


def shared_high_bits(shape, g):
    """Many distinct values that share all but the low mantissa bits (the bug class of vLLM #51782,
    SGLang #36807: candidates of one coarse bin overflowing a fixed buffer)."""
    return 1.0 + torch.randint(0, 1 << 14, shape, generator=g).double() * 2.0**-23


def specials(shape, g):
    """+-inf, NaN, +-0.0 and ordinary values mixed."""
    x = normal(shape, g)
    pick = torch.randint(0, 8, shape, generator=g)
    x = torch.where(pick == 0, torch.tensor(float("inf"), dtype=torch.float64), x)
    x = torch.where(pick == 1, torch.tensor(float("-inf"), dtype=torch.float64), x)
    x = torch.where(pick == 2, torch.tensor(float("nan"), dtype=torch.float64), x)
    x = torch.where(pick == 3, torch.tensor(0.0, dtype=torch.float64), x)
    x = torch.where(pick == 4, torch.tensor(-0.0, dtype=torch.float64), x)
    return x


def huge(shape, g):
    """|x| near float32 max (an fp16 coarse key saturates here)."""
    return (2 * _uniform(shape, g) - 1) * FLOAT32_MAX


def denormals(shape, g):
    """float32 subnormals of both signs, with zeros."""
    return (2 * _uniform(shape, g) - 1) * 1e-39


def mostly_neg_inf(shape, g):
    """Rows that are mostly -inf: the pivot falls in the -inf bin."""
    x = normal(shape, g)
    return torch.where(_uniform(shape, g) < 0.9, torch.tensor(float("-inf"), dtype=torch.float64), x)


def signed_zeros(shape, g):
    """Only -0.0 and +0.0: -0.0 ranks just below +0.0."""
    return torch.where(_uniform(shape, g) < 0.5, torch.tensor(-0.0, dtype=torch.float64),
                       torch.tensor(0.0, dtype=torch.float64))


def ascending(shape, g):
    return torch.arange(shape[1], dtype=torch.float64).expand(shape).clone() + 0.5 * _uniform(shape, g)


ALL = {f.__name__: f for f in (normal, ties, shared_high_bits, specials, huge, denormals, mostly_neg_inf,
                                signed_zeros, ascending)}


def make_logits(name, rows, stride, dtype, g, lengths=None, device="cpu"):
    """[rows, stride] logits of distribution `name`; columns at or past lengths[r] hold garbage."""
    x = ALL[name]((rows, stride), g)
    if dtype != torch.float32 and name == "shared_high_bits":
        # keep "many distinct values sharing high bits" true at 16-bit precision
        x = 1.0 + torch.randint(0, 1 << 7, (rows, stride), generator=g).double() * 2.0**-7
    x = x.to(dtype)
    if lengths is not None and stride:
        col = torch.arange(stride)
        garbage = torch.where(torch.rand((rows, stride), generator=g) < 0.5, float("nan"), float("inf"))
        x = torch.where(col[None, :] >= lengths.clamp(min=0).long()[:, None], garbage.to(dtype), x)
    return x.to(device)
