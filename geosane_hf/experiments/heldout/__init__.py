"""Leave one data source out (``make experiment``): does GeoSANE's recommended start beat every baseline on RS data
its population never saw?

One fold per data source of the evaluated tasks (Statlog, Landsat-8, SpaceNet): the population is the packaged real
checkpoints, the trained zoo and RS-tuned members (the packaged ImageNet Lite0 / Lite2 fine-tuned on the tasks of the
*other* sources, :mod:`geosane_hf.experiments.members`); a GeoSANE is trained on it, and the packaged ``heldout``
comparison (``geosane evaluate``) runs on the fold's tasks. Every member's images are checked against the fold's by
content hash. The report counts, per baseline, GeoSANE's wins, ties and losses beyond the seed spread.

Modules: ``config`` (:class:`HeldoutConfig`, :class:`HeldoutError`), ``run`` (the stages, :func:`run_heldout`) and
``report`` (:func:`tally`, the Markdown report).

>>> HeldoutConfig(quick=True).experiment
'heldout-quick'
"""

from geosane_hf.experiments.heldout.config import HeldoutConfig, HeldoutError
from geosane_hf.experiments.heldout.report import Tally, tally
from geosane_hf.experiments.heldout.run import HeldoutResult, heldout_stages, run_heldout

__all__ = ["HeldoutConfig", "HeldoutError", "HeldoutResult", "Tally", "heldout_stages", "run_heldout", "tally"]
