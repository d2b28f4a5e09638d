"""The installed package must contain every sub-package of the source tree and the modeling files."""

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), config["package-dir"]


def test_every_subpackage_is_declared():
    declared, _ = _declared()
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "geosane_hf").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found, "no packages found under geosane_hf/"
    missing = found - declared
    assert not missing, f"sub-packages missing from [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_modeling_is_mapped_into_the_package():
    declared, package_dir = _declared()
    assert "geosane_hf.modeling" in declared
    assert package_dir["geosane_hf.modeling"] == "modeling"
    import geosane_hf.modeling

    assert Path(geosane_hf.modeling.__file__).resolve().parent == ROOT / "modeling"


def test_every_declared_package_exists():
    declared, package_dir = _declared()
    for name in declared:
        folder = ROOT / package_dir.get(name, name.replace(".", "/"))
        assert (folder / "__init__.py").is_file(), (
            f"pyproject.toml declares {name} but {folder}/__init__.py is missing"
        )


def _run(args, **kwargs):
    import subprocess

    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **extra})
    return env


def test_importing_the_package_is_light():
    """`import geosane_hf` (and the CLI parser) must not import torch or the transformers modeling."""
    import sys

    code = (
        "import sys, geosane_hf, geosane_hf.cli; geosane_hf.cli.build_parser(); "
        "heavy = sorted(m for m in ('torch', 'transformers.modeling_utils', 'timm') if m in sys.modules); "
        "print(heavy); assert not heavy, heavy; "
        "from geosane_hf import GeoSANEConfig, GeoSANEModel; "
        "assert 'transformers.modeling_utils' in sys.modules; "
        "from transformers import AutoConfig; from transformers.pipelines import PIPELINE_REGISTRY; "
        "assert AutoConfig.for_model('geosane').__class__ is GeoSANEConfig; "
        "assert 'weight-generation' in PIPELINE_REGISTRY.get_supported_tasks()"
    )
    _run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(PYTHONPATH=str(ROOT)))


def test_error_messages_name_extras_that_exist():
    import re

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {
        (path.relative_to(ROOT), match)
        for path in (ROOT / "geosane_hf").rglob("*.py")
        for match in re.findall(r"geosane-hf\[([\w,-]+)\]", path.read_text())
    }
    missing = {(str(p), m) for p, m in named if not set(m.split(",")) <= extras}
    assert not missing, f"messages name extras that pyproject.toml does not define: {sorted(missing)}"


def test_wheel_installs_into_a_fresh_venv_and_generates_with_a_full_card(tmp_path):
    """Build the wheel from a copy of the sources, install it alone into a new venv, run the CLI from elsewhere."""
    import shutil
    import site
    import sys

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from hub_server import card_errors

    src = tmp_path / "src"
    for name in ("geosane_hf", "modeling"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src]
    )
    wheel = next((tmp_path / "dist").glob("geosane_hf-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    # The dependencies come from the test venv's site-packages (a path file), the package only from the wheel.
    purelib = next(venv.glob("lib/python3*/site-packages"))
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel])
    work = tmp_path / "work"  # not the repository: nothing may be found through the source tree
    work.mkdir()
    env = _clean_env()
    python, geosane = str(venv / "bin" / "python"), str(venv / "bin" / "geosane")
    assert _run([geosane, "--version"], cwd=work, env=env).stdout.startswith("geosane-hf ")
    where = _run([python, "-c", "import geosane_hf; print(geosane_hf.__file__)"], cwd=work, env=env).stdout
    assert where.strip().startswith(str(purelib)), where

    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    torch.manual_seed(0)
    GeoSANEModel(GeoSANEConfig.from_preset("tiny")).save_pretrained(tmp_path / "geosane")
    args = ["generate", "--prompt", "test_resnet", "--in-chans", "4", "--num-classes", "6", "--no-calibrate"]
    _run([geosane, *args, "--model", tmp_path / "geosane", "--out", work / "gen"], cwd=work, env=env)
    card = (work / "gen" / "README.md").read_text()
    assert "## License chain" in card and "## Use and fine-tune" in card  # the packaged template, not a stub
    assert card_errors(card) == [] and "base_model" not in card.split("---")[1]  # a local model: no base_model
    code = (
        "from geosane_hf import package_data as p; "
        "print(sorted(p.training_configs()), all(p.card_template(n) for n in p.CARD_TEMPLATES))"
    )
    out = _run([python, "-c", code], cwd=work, env=env).stdout
    assert out.strip() == "['base-v1', 'small-demo', 'tiny-test', 'zoo-experiment'] True", out


def test_training_configs_are_package_data_found_by_name_or_old_path():
    from geosane_hf.package_data import training_config_path, training_configs

    packaged = training_configs()
    assert set(packaged) == {"tiny-test", "small-demo", "base-v1", "zoo-experiment"} and all(
        p.is_file() for p in packaged.values()
    )
    assert training_config_path("small-demo") == packaged["small-demo"]
    assert training_config_path("training/configs/small-demo.yaml") == packaged["small-demo"]  # docs and resumed demos
    with pytest.raises(FileNotFoundError, match="did you mean small-demo"):
        training_config_path("small-dmeo")
