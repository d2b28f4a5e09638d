"""TorchGeo benchmarks as tasks, user GeoTIFF folders, and band names resolved per sensor.

Nothing is downloaded: each test writes a few tiny files in the data set's real on-disk layout (the one TorchGeo's
class reads with ``download=False``) and reads them through ``Task.from_torchgeo`` or ``geosane evaluate``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geosane_hf.evaluation import Task
from geosane_hf.evaluation.data import EvaluationError, data_from_folder
from geosane_hf.imagery.bands import AmbiguousBandError, qualify_bands, resolve_bands

pytestmark = pytest.mark.usefixtures("one_thread")


def _tif(path, image: np.ndarray, descriptions=None) -> None:
    """A GeoTIFF [C, H, W] with a north-up transform (the layout rasterio and TorchGeo read)."""
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = image.shape
    profile = {"driver": "GTiff", "count": count, "height": height, "width": width, "dtype": image.dtype.name}
    with rasterio.open(path, "w", crs="EPSG:32632", transform=from_origin(500000, 5000000, 10, 10), **profile) as dst:
        dst.write(image)
        for i, name in enumerate(descriptions or ()):
            dst.set_band_description(i + 1, name)


def _pattern(rng, label: int, shape) -> np.ndarray:
    """Class-dependent band values (so the classes differ) plus noise, as uint16 digital numbers."""
    base = 1000 + 400 * label
    return (base + rng.integers(0, 200, size=shape)).astype(np.uint16)


# -------------------------------------------------------------------------------------------------------- writers


def write_eurosat(root, classes=("AnnualCrop", "Forest", "SeaLake"), per_split=(3, 2)):
    rng = np.random.default_rng(0)
    folder = root / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    lists = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        for i in range(sum(per_split) + 1):
            file = f"{name}_{i + 1}.tif"
            _tif(folder / name / file, _pattern(rng, label, (13, 16, 16)))
            split = "train" if i < per_split[0] else "test" if i < sum(per_split) else "val"
            lists[split].append(file.replace(".tif", ".jpg"))  # the split files name the original jpgs
    for split, files in lists.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(files) + "\n")
    return classes


def write_resisc45(root, classes=("airplane", "forest"), per_split=(3, 2)):
    from PIL import Image

    rng = np.random.default_rng(1)
    lists = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        for i in range(sum(per_split)):
            file = f"{name}_{i + 1:03d}.jpg"
            path = root / "NWPU-RESISC45" / name / file
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((60 * label + rng.integers(0, 50, (24, 24, 3))).astype(np.uint8)).save(path)
            lists["train" if i < per_split[0] else "test"].append(file)
    for split, files in lists.items():
        (root / f"resisc45-{split}.txt").write_text("\n".join(files) + "\n")


def write_so2sat(root, sizes=(6, 4)):
    import h5py

    rng = np.random.default_rng(2)
    for file, n in zip(("training.h5", "testing.h5"), sizes, strict=True):
        labels = np.arange(n) % 3  # 3 of the 17 local climate zones
        with h5py.File(root / file, "w") as f:
            f["sen1"] = rng.normal(size=(n, 32, 32, 8))
            f["sen2"] = rng.random((n, 32, 32, 10)) + labels[:, None, None, None]
            f["label"] = np.eye(17)[labels]
    return sizes


def write_bigearthnet(root, sizes=(4, 3)):
    from torchgeo.datasets import BigEarthNet

    rng = np.random.default_rng(3)
    names43 = BigEarthNet.class_sets[43]
    bands = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    rows = {"train": [], "val": [], "test": []}
    for split, n in zip(("train", "test", "val"), (*sizes, 1), strict=True):
        for i in range(n):
            patch = f"S2A_MSIL2A_20170613T101031_{split}_{i}"
            folder = root / "BigEarthNet-v1.0" / patch
            for band in bands:
                side = (
                    20 if band in ("B01", "B09") else 40 if band in ("B05", "B06", "B07", "B8A", "B11", "B12") else 120
                )
                _tif(folder / f"{patch}_{band}.tif", rng.integers(0, 3000, (1, side, side)).astype(np.uint16))
            labels = ["Sea and ocean"] if i % 2 else ["Coniferous forest", "Mixed forest"]
            assert all(label in names43 for label in labels)
            (folder / f"{patch}_labels_metadata.json").write_text(json.dumps({"labels": labels}))
            rows[split].append(f"{patch},S1A_{split}_{i}")
    for split, lines in rows.items():
        (root / f"bigearthnet-{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "BigEarthNet-S1-v1.0").mkdir()  # TorchGeo checks both folders' presence before it reads s2 only


# ---------------------------------------------------------------------------------------------------------- tests


def test_eurosat_keeps_its_13_sentinel2_bands(tmp_path):
    classes = write_eurosat(tmp_path)
    task = Task.from_torchgeo("eurosat", root=str(tmp_path))
    data = task.data
    assert task.config.name == "torchgeo:eurosat" and data.sensor == "S2"
    assert data.in_chans == 13 and data.band_names[7] == "B08" and data.band_names[-1] == "B8A"
    assert len(data.train) == 3 * len(classes) and len(data.test) == 2 * len(classes)
    assert tuple(data.class_names) == tuple(sorted(classes)) and data.num_classes == len(classes)
    # labels follow the class folders: the class-dependent brightness separates them (before normalisation)
    means = [float(data.train.images[data.train.labels == k].mean()) for k in range(data.num_classes)]
    assert means == sorted(means)
    # qualified for generation: the NIR band is Sentinel-2's B08, not Landsat-8's panchromatic B8
    assert qualify_bands(data.band_names, data.sensor)[7] == "S2:B08"
    rgb = Task.from_torchgeo("eurosat", root=str(tmp_path), bands="rgb", max_train=2)
    assert rgb.data.band_names == ("B04", "B03", "B02") and len(rgb.data.train) == 2


def test_resisc45_so2sat_and_bigearthnet_read_offline(tmp_path):
    write_resisc45(tmp_path / "resisc")
    resisc = Task.from_torchgeo("resisc45", root=str(tmp_path / "resisc")).data
    assert resisc.in_chans == 3 and resisc.band_names == ("red", "green", "blue") and resisc.num_classes == 2
    assert len(resisc.train) == 6 and resisc.sensor is None

    (tmp_path / "so2sat").mkdir()
    write_so2sat(tmp_path / "so2sat")
    so2sat = Task.from_torchgeo("so2sat", root=str(tmp_path / "so2sat")).data
    assert so2sat.in_chans == 10 and so2sat.band_names[6:8] == ("B08", "B8A") and so2sat.num_classes == 17
    assert sorted(set(so2sat.train.labels.tolist())) == [0, 1, 2]

    write_bigearthnet(tmp_path / "ben")
    ben = Task.from_torchgeo("bigearthnet", root=str(tmp_path / "ben"), label_class="Marine waters").data
    assert ben.in_chans == 12 and ben.train.images.shape[-1] == 120 and ben.sensor == "S2"
    assert ben.train.labels.tolist() == [0, 1, 0, 1]  # odd patches show the sea
    assert ben.class_names == ("no Marine waters", "Marine waters")


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(EvaluationError, match=r"EuroSAT data set in .* download=True"):
        Task.from_torchgeo("eurosat", root=str(tmp_path))
    with pytest.raises(EvaluationError, match="did you mean eurosat"):
        Task.from_torchgeo("eurosta", root=str(tmp_path))


def test_geotiff_folder_band_names_from_descriptions_and_sensor(tmp_path):
    rng = np.random.default_rng(4)
    for split, n in (("train", 4), ("test", 2)):
        rows = ["file,label"]
        for i in range(n):
            _tif(tmp_path / split / "images" / f"p{i}.tif", _pattern(rng, i % 2, (4, 8, 8)), ["B2", "B3", "B4", "B8"])
            rows.append(f"p{i}.tif,{i % 2}")
        (tmp_path / split / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(EvaluationError, match=r"'B8' is ambiguous.*'S2:B8'"):
        data_from_folder(tmp_path)  # B8: Landsat-8 panchromatic or Sentinel-2 NIR?
    s2 = data_from_folder(tmp_path, sensor="S2")
    assert s2.band_names == ("B02", "B03", "B04", "B08") and s2.sensor == "S2"
    l8 = data_from_folder(tmp_path, bands=["L8:B2", "L8:B3", "L8:B4", "L8:B8"])
    assert l8.band_names == ("B2", "B3", "B4", "B8")


def test_band_names_are_resolved_per_sensor():
    from geosane_hf.generation.bands import adapt_stem, band_wavelength

    assert resolve_bands(["B8"], sensor="S2") == ("B08",) and resolve_bands(["B8"], sensor="L8") == ("B8",)
    assert band_wavelength("S2:B8") == 842 and band_wavelength("L8:B8") == 590
    for ambiguous in (["B8"], ["B2", "B3", "B4", "B5"], ["B11"]):
        with pytest.raises(AmbiguousBandError, match="sensor="):
            resolve_bands(ambiguous)
    assert resolve_bands(["B02", "B03", "B04", "B8"]) == ("B02", "B03", "B04", "B08")  # padded names fix S2
    assert resolve_bands(["B4", "B3", "B2"]) == ("B4", "B3", "B2")  # the same colours for both sensors
    # the stem adaptation follows the resolved band: S2's B8 is NIR (mean filter), L8's B8 is green-ish pan
    import torch

    w = torch.randn(4, 3, 3, 3)
    assert adapt_stem(w, qualify_bands(["B8"], "S2")).mapping == ["mean"]
    assert adapt_stem(w, qualify_bands(["B8"], "L8")).mapping == ["G"]


def test_generate_refuses_ambiguous_bands_and_takes_a_sensor(tmp_path, capsys):
    import torch

    from geosane_hf.cli import main
    from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

    torch.manual_seed(0)
    GeoSANEModel(GeoSANEConfig.from_preset("tiny")).save_pretrained(tmp_path / "g")
    args = ["generate", "--prompt", "test_resnet", "--model", str(tmp_path / "g"), "--no-calibrate"]
    assert main([*args, "--bands", "B2,B3,B4,B8", "--out", str(tmp_path / "a")]) == 2
    assert "--sensor S2" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*args, "--bands", "B2,B3,B4,B8", "--sensor", "S2", "--out", str(tmp_path / "b")]) == 0
    provenance = json.loads((tmp_path / "b" / "geosane_generation.json").read_text())
    assert provenance["bands"] == ["B02", "B03", "B04", "B08"] and provenance["in_chans"] == 4


def test_cli_evaluate_on_a_torchgeo_task_and_a_user_folder(tmp_path):
    from geosane_hf.cli import main

    write_eurosat(tmp_path / "eurosat")
    common = ["--starts", "scratch", "--seeds", "0", "--workers", "1", "--quiet"]
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--task", "torchgeo:eurosat", "--root", str(tmp_path / "eurosat"), "--out", str(out), *common]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert "torchgeo:eurosat" in json.dumps(results)
    # --data: a user's GeoTIFF folder, band names qualified by --sensor
    rng = np.random.default_rng(5)
    for split, n in (("train", 6), ("test", 4)):
        rows = ["file,label"]
        for i in range(n):
            _tif(tmp_path / "mine" / split / "images" / f"t{i}.tif", _pattern(rng, i % 2, (4, 16, 16)))
            rows.append(f"t{i}.tif,{i % 2}")
        (tmp_path / "mine" / split / "labels.csv").write_text("\n".join(rows) + "\n")
    args = ["evaluate", "--data", str(tmp_path / "mine"), "--bands", "B02,B03,B04,B08", "--out", str(tmp_path / "e2")]
    assert main([*args, *common]) == 0
    assert "data:mine" in (tmp_path / "e2" / "results.md").read_text()
    assert main(["evaluate", "--task", "torchgeo:eurosat", "--out", str(tmp_path / "e3")]) == 2  # --root missing
