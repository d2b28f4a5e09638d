"""Every ```python / ```bash block of README.md and docs/*.md runs, against tiny fixtures (offline, seconds).

A block that cannot run here says why, on the line before its fence::

    <!-- snippet: skip (needs the 12-minute demo outputs) -->

Blocks of one file run in order in one fresh interpreter (Python) or one bash (shell), in a working folder holding
what the docs name: ``runs/small/model`` (a tiny GeoSANE model, pipeline files included), ``model.safetensors``,
``unet.onnx``, and the Hub repos ``org/name`` and ``geosane/base`` in an offline Hugging Face cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(python|bash)[ \t]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
SKIP = re.compile(r"^<!--\s*snippet:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    language: str
    code: str
    skip: str | None  # the reason, for a marked block


def snippets(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        marker = SKIP.match(before[-1].strip()) if before else None
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(path, line, match.group(1), match.group(2), marker["reason"].strip() if marker else None))
    return found


ALL = [s for path in DOCS for s in snippets(path)]


def test_the_docs_have_snippets_and_every_skip_says_why():
    assert len(ALL) >= 20, [f"{s.path.name}:{s.line}" for s in ALL]
    for s in ALL:
        assert s.skip is None or len(s.skip) >= 10, f"{s.path.name}:{s.line}: a skip marker needs a reason"
    runnable = [s for s in ALL if s.skip is None]
    assert {s.language for s in runnable} == {"python", "bash"}, "both kinds must really run"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The files and Hub repos the snippets name, offline."""
    import onnx
    import timm
    import torch
    from onnx import helper, numpy_helper

    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.generation.pipeline import save_pretrained_with_pipeline
    from geosane_hf.hub import save_timm_repo
    from geosane_hf.hub_cache import publish_to_cache
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    ws = tmp_path_factory.mktemp("snippets")
    torch.manual_seed(0)
    model_dir = save_pretrained_with_pipeline(GeoSANEModel(GeoSANEConfig.from_preset("tiny")), ws / "runs/small/model")
    net = timm.create_model("test_resnet", in_chans=4, num_classes=6)
    save_safetensors({k: v.contiguous() for k, v in net.state_dict().items()}, ws / "model.safetensors")
    weight = numpy_helper.from_array(torch.randn(8, 4, 3, 3).numpy().astype("float16"), "conv.weight")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "unet",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph), str(ws / "unet.onnx"))
    cache = ws / "hf" / "hub"
    repo = save_timm_repo(net, ws / "repo", {"architecture": "test_resnet", "in_chans": 4})
    publish_to_cache(repo, "org/name", cache_dir=cache)
    publish_to_cache(model_dir, "geosane/base", cache_dir=cache)
    return ws


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HF_HOME=str(ws / "hf"),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


RUNNER = """
import sys, traceback
blocks = {blocks!r}
scope = {{"__name__": "__main__"}}
for where, code in blocks:
    try:
        exec(compile(code, where, "exec"), scope)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"snippet {{where}} failed")
"""


@pytest.mark.parametrize("path", [p for p in DOCS if any(s.skip is None for s in snippets(p))], ids=lambda p: p.name)
def test_snippets_run(path, workspace):
    blocks = [s for s in snippets(path) if s.skip is None]
    python = [(f"{path.name}:{s.line}", s.code) for s in blocks if s.language == "python"]
    bash = [s for s in blocks if s.language == "bash"]
    env = _env(workspace)
    if python:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER.format(blocks=python)],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    for s in bash:
        script = f'set -euo pipefail\ngeosane() {{ "{sys.executable}" -m geosane_hf.cli "$@"; }}\n{s.code}'
        proc = subprocess.run(
            ["bash", "-c", script], cwd=workspace, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{path.name}:{s.line} failed\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
