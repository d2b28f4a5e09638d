"""The offline end-to-end demo: from real checkpoints to generated weights that are fine-tuned against every baseline.

``make demo`` (``geosane demo``) runs these stages into one output folder, each resumable:

1. **packaged**: tokenize the real packaged checkpoints in both modes and check the round trip bit for bit
   (not in quick mode).
2. **zoo**: train the offline population (``geosane zoo train``) on packaged Statlog / Landsat-8 data.
3. **collect**: the offline manifest (the packaged real models) + the population -> a checked collection.
4. **dataset**: the collection -> tokenized-weights Parquet shards (``geosane build-dataset``).
5. **train**: the ``small`` GeoSANE through ``accelerate launch`` (one CPU process; two held-out zoo runs).
6. **publish**: the trained model -> ``geosane/base`` in the local Hub cache (so that
   ``AutoModel.from_pretrained("geosane/base")`` works offline afterwards), checked by loading it back; pushed to
   ``HF_ENDPOINT`` as well when ``--push-to-hub`` and a token are given.
7. **generate**: weights for a larger and a MobileNet-size prompt (4 Landsat bands), BatchNorm calibrated,
   published as timm repos into the local folder store and loaded back with ``timm.create_model("local-dir:...")``.
8. **embed**: per-model latents of the collection and the generated models, projected with UMAP (the Space's
   latent view and ``docs/figures/latent_umap.png``; not in quick mode).
9. **evaluate**: every start (scratch, ImageNet, prompt + noise, weight selection, pruning, distillation,
   GeoSANE with each sampler) fine-tuned with one protocol on two tasks, 3 seeds (``geosane evaluate``).
10. **zoo-experiment**: zero-shot and 1-epoch accuracy of generated population models vs matched-distance noise,
   and latent vs weight-space interpolation.

A stage whose record in ``demo_state.json`` matches its settings is skipped; the stages themselves also resume
(zoo runs, collected files, training checkpoints, fine-tuning runs), so an interrupted demo continues where it
stopped. ``quick=True`` is the same pipeline at a budget of a few minutes (what the tests run).

Modules: ``config`` (:class:`DemoConfig`, :class:`DemoError`, :class:`DemoStage`), ``stages`` (the stages and
:func:`demo_stages`), ``packaged_table`` (stage ``packaged``'s round-trip table) and ``run`` (:func:`run_demo`,
``results.md``); the public names are re-exported here.

Example:
    >>> config = DemoConfig(out_dir="runs/demo", quick=True)
    >>> [stage.name for stage in demo_stages(config)][:3]
    ['zoo', 'collect', 'dataset']
"""

from geosane_hf.experiments.demo.config import STATE_FILE, DemoConfig, DemoError, DemoStage
from geosane_hf.experiments.demo.packaged_table import tokenize_packaged
from geosane_hf.experiments.demo.run import DemoResult, run_demo, write_report
from geosane_hf.experiments.demo.stages import demo_stages, holdout_runs

__all__ = [
    "STATE_FILE",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "DemoStage",
    "demo_stages",
    "holdout_runs",
    "run_demo",
    "tokenize_packaged",
    "write_report",
]
