"""examples/dsa_decode.py: the DSA decode step runs and checks itself against the oracle, on the CPU in a tiny
configuration and (GPU-marked) on CUDA with every layer of a step in one CUDA graph."""
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dsa_decode.py"


def load_example():
    spec = importlib.util.spec_from_file_location("dsa_decode_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return load_example()


def assert_checked(result, presets, steps):
    assert result["verified"]
    records = result["records"]
    assert [r["preset"] for r in records] == [p for p in presets for _ in range(steps)]
    for r in records:
        assert r["exact"] and r["checked_layers"] >= 1 and r["plan_status"] == "FRESH"
    lengths = {p: [(r["len_min"], r["len_max"]) for r in records if r["preset"] == p] for p in presets}
    for p, spans in lengths.items():
        assert spans[1][1] <= spans[0][0], f"{p}: step 1 (all short) should be shorter than step 0 (all maximal)"


@pytest.mark.parametrize("preset", ["v32", "v4flash"])
@pytest.mark.parametrize("next_n", [1, 2])
def test_cpu_tiny(example, preset, next_n):
    result = example.main(["--device", "cpu", "--preset", preset, "--steps", "3", "--next-n", str(next_n)])
    assert result["device"] == "cpu" and result["json"] is None
    assert_checked(result, [preset], 3)
    maximal = [r for r in result["records"] if r["step"] == 0]
    assert maximal[0]["len_max"] == example.PRESETS[preset].cpu_width


def test_cpu_options(example, capsys):
    """Several logits buffers, bf16 logits, --pdl (absent: said so) and --bench (on the CPU: the three top-k
    variants run eagerly and are checked, untimed, nothing written)."""
    result = example.main(["--device", "cpu", "--steps", "2", "--layers", "4", "--logits-buffers", "2",
                           "--logits-dtype", "bfloat16", "--verify-layers", "4", "--pdl", "--bench"])
    assert_checked(result, ["v32", "v4flash"], 2)
    out = capsys.readouterr().out
    if "pdl" not in inspect.signature(example.pt.top_k_per_row_decode).parameters:
        assert "PDL: not available in this build" in out
    assert "on the CPU the three top-k variants run once per step" in out and result["json"] is None


def test_cpu_catches_a_wrong_slot(example, monkeypatch):
    """The check is real: one wrong slot in one layer fails the run."""
    original = example.StepState.top_k

    def corrupt(self, logits, out, plan, workspace):
        result = original(self, logits, out, plan, workspace)
        out[0, 0] += 1
        return result

    monkeypatch.setattr(example.StepState, "top_k", corrupt)
    with pytest.raises(AssertionError, match="slots differ from the oracle"):
        example.main(["--device", "cpu", "--preset", "v4flash", "--steps", "1", "--layers", "1"])


@pytest.mark.gpu
def test_cuda_graph_both_presets(example, tmp_path):
    """Both presets on CUDA, every layer of a step in one graph, replayed with new lengths; with --bench
    the three top-k graphs are timed, checked and written."""
    out = tmp_path / "dsa_decode.json"
    result = example.main(["--device", "cuda", "--batch", "3", "--next-n", "2", "--layers", "3", "--steps", "3",
                           "--bench", "--out", str(out)])
    assert_checked(result, ["v32", "v4flash"], 3)
    for r in result["records"]:
        assert r["plan_once_us"] > 0 and r["plan_per_layer_us"] > 0 and r["torch_us"] > 0
    record = json.loads(out.read_text())
    assert set(record["presets"]) == {"v32", "v4flash"}
    assert all(len(p["steps"]) == 3 for p in record["presets"].values())
    assert max(r["len_max"] for r in result["records"] if r["preset"] == "v4flash") == 262_144
    assert max(r["len_max"] for r in result["records"] if r["preset"] == "v32") == 163_840


@pytest.mark.gpu
def test_cuda_graph_one_buffer_per_layer_bf16(example):
    """Every layer its own logits buffer (no snapshot copies), bfloat16 logits, float32 key cache."""
    result = example.main(["--device", "cuda", "--batch", "2", "--layers", "2", "--steps", "2", "--logits-buffers",
                           "2", "--logits-dtype", "bfloat16", "--kv-dtype", "float32"])
    assert_checked(result, ["v32", "v4flash"], 2)
    assert torch.cuda.is_available()
