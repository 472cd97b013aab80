"""The papers' claims, put to the test: each claim's arms trained with several seeds, and a verdict.

A claim is what a paper says one setting does better than another ("4 rotations beat 2 and 8"). Its arms
are one zoo config with the overrides that make each setting, trained under the same CPU budget; each arm
runs once per seed. The verdict compares the arms' mean +- std (sample standard deviation over the seeds)
of the claim's metric for every pair the paper orders:

- reproduced: every claimed pair is ordered as the paper says, the intervals apart;
- not reproduced: some pair is ordered the other way, the intervals apart;
- inconclusive: otherwise (intervals overlap, or fewer than two seeds, so no spread is known).

`python -m sslzoo.claims` runs them (sslzoo/claims/__main__.py); docs/claims.md has the table.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Dict, List, Mapping, Sequence, Tuple

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"

# Every claim's CPU budget: a stratified 10,000-image subset of the data (9,000 train / 1,000 validation
# with the configs' val_fraction) and 3 epochs: an arm's run is 1-2 minutes on the 2-core CPU, so 3 seeds
# of 2-3 arms fit the 20 minutes a claim may take.
BUDGET = ("data.max_examples=10000", "trainer.epochs=3")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One setting of a claim: `overrides` on the claim's config (none: the config as it is)."""

    name: str
    overrides: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a paper claims, as arms of one zoo config and the order it says they come in.

    `beats` holds (better, worse) arm names; `metric` is a key of the runs' metrics.json.
    """

    name: str
    source: str
    statement: str
    config: str
    arms: Tuple[Arm, ...]
    beats: Tuple[Tuple[str, str], ...]
    metric: str = "linear_top1"
    budget: Tuple[str, ...] = BUDGET

    def __post_init__(self):
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"claim {self.name}: arm names repeat: {names}")
        unknown = {name for pair in self.beats for name in pair} - set(names)
        if unknown or not self.beats:
            raise ValueError(f"claim {self.name}: beats must order its arms {names}, got {self.beats}")


def _claims(*claims: Claim) -> Dict[str, Claim]:
    return {claim.name: claim for claim in claims}


CLAIMS: Dict[str, Claim] = _claims(
    Claim("rotnet_rotations", "Gidaris et al., ICLR 2018, Table 2",
          "4 rotations (multiples of 90 degrees) teach better features than 2 (0 and 180) or 8 (multiples of 45)",
          "zoo_configs/rotnet_convnet_small_cifar10.yaml",
          (Arm("four"), Arm("two", ("method.options.rotations=[0,2]",)),
           Arm("eight", ("method.options.rotation_step=45", "method.options.rotations=[0,1,2,3,4,5,6,7]"))),
          (("four", "two"), ("four", "eight"))),
    Claim("simclr_projection", "Chen et al., ICML 2020, Figure 8",
          "a nonlinear projection head beats a linear one, which beats none",
          "zoo_configs/simclr_convnet_small_cifar10.yaml",
          (Arm("nonlinear"), Arm("linear", ("method.options.projection=linear",)),
           Arm("none", ("method.options.projection=none",))),
          (("nonlinear", "linear"), ("linear", "none"))),
    Claim("simclr_h_vs_z", "Chen et al., ICML 2020, Section 4.2 and Figure 8",
          "the representation before the projection head (h) beats its output (z = g(h))",
          "zoo_configs/simclr_convnet_small_cifar10.yaml",
          (Arm("h"), Arm("z", ("method.options.probe_features=z",))),
          (("h", "z"),)),
    # Square-root learning-rate scaling from the config's 1.0 at batch 128 (the paper's rule for small
    # batches and short training, Appendix B.1), so only the batch size differs in substance.
    Claim("simclr_batch_size", "Chen et al., ICML 2020, Figure 9",
          "at a fixed number of epochs, a larger batch (more negatives) gives better features",
          "zoo_configs/simclr_convnet_small_cifar10.yaml",
          (Arm("batch_256", ("trainer.batch_size=256", "optimizer.learning_rate=1.414")),
           Arm("batch_64", ("trainer.batch_size=64", "optimizer.learning_rate=0.707"))),
          (("batch_256", "batch_64"),)),
    Claim("moco_momentum", "He et al., CVPR 2020, Section 4.1 (momentum ablation)",
          "a slowly moving key encoder (m = 0.99) learns; copying the query encoder (m = 0) fails",
          "zoo_configs/moco_v1_convnet_small_cifar10.yaml",
          (Arm("momentum_0.99", ("method.options.momentum=0.99",)),
           Arm("momentum_0", ("method.options.momentum=0.0",))),
          (("momentum_0.99", "momentum_0"),)),
    Claim("moco_shuffle_bn", "He et al., CVPR 2020, Section 3.3",
          "shuffling BN matters: with one BN batch for queries and keys the pretext task is cheated",
          "zoo_configs/moco_v1_convnet_small_cifar10.yaml",
          (Arm("shuffled_groups", ("method.options.shuffle_bn_groups=8",)),
           Arm("one_group", ("method.options.shuffle_bn_groups=1",))),
          (("shuffled_groups", "one_group"),)),
    Claim("splitbrain_both_directions", "Zhang et al., CVPR 2017, Table 3",
          "both cross-channel predictions (L -> ab and ab -> L) together beat either one alone",
          "zoo_configs/splitbrain_convnet_small_cifar10.yaml",
          (Arm("both"),
           Arm("l_to_ab_only", ("method.options.l_loss_weight=0", "method.options.features=l")),
           Arm("ab_to_l_only", ("method.options.ab_loss_weight=0", "method.options.features=ab"))),
          (("both", "l_to_ab_only"), ("both", "ab_to_l_only"))),
    Claim("colorization_classification", "Zhang et al., ECCV 2016, Section 2.1 and Table 2",
          "classification over rebalanced colour bins beats regression of ab (the paper shows it "
          "qualitatively: regression gives desaturated colours)",
          "zoo_configs/colorization_convnet_small_cifar10.yaml",
          (Arm("classification"), Arm("regression", ("method.options.loss=regression",))),
          (("classification", "regression"),)),
    Claim("context_encoder_masks", "Pathak et al., CVPR 2016, Table 1 (region shapes)",
          "random-region masks teach better features than a central square",
          "zoo_configs/context_encoder_convnet_small_cifar10.yaml",
          (Arm("random_region", ("method.options.mask=random_region",)),
           Arm("central", ("method.options.mask=central",))),
          (("random_region", "central"),)),
    Claim("cpc_prediction_steps", "Henaff et al., ICML 2020, Section 4 (and Oord et al. 2018)",
          "predicting more steps ahead helps, up to a point: 3 rows beat 1",
          "zoo_configs/cpc_v2_convnet_small_cifar10.yaml",
          (Arm("steps_3", ("method.options.steps=3",)), Arm("steps_1", ("method.options.steps=1",))),
          (("steps_3", "steps_1"),)),
)


def spread(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample standard deviation) of `values`; the deviation is nan for fewer than two values."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def compare(better: Sequence[float], worse: Sequence[float]) -> str:
    """The verdict on "`better` beats `worse`" from each arm's per-seed values."""
    if len(better) < 2 or len(worse) < 2:
        return INCONCLUSIVE
    (mb, sb), (mw, sw) = spread(better), spread(worse)
    if mb - sb > mw + sw:
        return REPRODUCED
    if mw - sw > mb + sb:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def verdict(claim: Claim, values: Mapping[str, Sequence[float]]) -> Tuple[str, List[dict]]:
    """The claim's verdict and one row per claimed pair, from each arm's per-seed metric values."""
    pairs = [{"better": better, "worse": worse, "verdict": compare(values[better], values[worse])}
             for better, worse in claim.beats]
    found = {pair["verdict"] for pair in pairs}
    if NOT_REPRODUCED in found:
        return NOT_REPRODUCED, pairs
    return (REPRODUCED if found == {REPRODUCED} else INCONCLUSIVE), pairs
