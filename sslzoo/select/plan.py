"""How `sslzoo select` spends its budget: each candidate's measured speed, then the rungs' length.

Calibration times a few training steps of every arm on the user's data (after the step that traces) and
the fixed costs of a trial (build, trace, scoring); an arm that cannot train at this image size fails
here and is left out with its error. The plan then sizes the rung unit so successive halving fits its
share of the budget:

    rung r (r = 0 .. R-1) keeps ceil(n / eta^r) candidates, each trained to eta^r units
    search seconds ~= sum_r  n_r * ((eta^r - eta^(r-1)) * unit * s_per_image + overhead)

A unit is a fixed number of training images (the same for every candidate, rounded to whole batches).
What the search leaves is the winner's final training; each candidate's schedule (learning rate,
momentum cosines, warmup as the same share) spans the units it would reach if it won, so a candidate
stopped at a rung and continued later trains as one run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

from sslzoo.config import ConfigError


@dataclass
class Speed:
    """One arm's measured costs on this data and machine."""

    seconds_per_image: float
    overhead_seconds: float  # build, compile, prepare, the traced first step, scoring
    batch_size: int
    score_seconds: float = 0.0  # the scoring pass alone (part of the overhead)

    def to_dict(self):
        return asdict(self)


def rung_sizes(count: int, eta: int) -> List[int]:
    """Candidates per rung: ceil(count / eta^r) until one remains (a single candidate: one rung)."""
    sizes = [count]
    while sizes[-1] > 1:
        sizes.append(math.ceil(count / eta ** len(sizes)))
    return sizes


@dataclass
class Plan:
    """The search's rungs and unit, fixed once (a resumed search reuses it)."""

    eta: int
    unit_images: int
    rung_sizes: List[int]
    rung_units: List[int]  # cumulative units trained by the end of each rung: 1, eta, eta^2, ...
    steps_per_unit: Dict[str, int]  # candidate -> optimizer steps of one unit (its own batch size)
    horizon_units: Dict[str, int]  # candidate -> units its schedule spans (what it trains to if it wins)
    planned_search_seconds: float
    planned_final_seconds: float
    notes: List[str] = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)


def make_plan(speeds: Dict[str, Speed], budget_seconds: float, spent_seconds: float, eta: int,
              search_share: float, train_images: int) -> Plan:
    """Sizes the unit so the planned search takes `search_share` of the budget left after `spent_seconds`.

    Args:
        speeds: candidate name -> its arm's measured Speed (calibrated candidates only).
        train_images: images in the training split (a unit never exceeds one pass).
    Raises:
        ConfigError: the budget cannot give every candidate one batch per unit.
    """
    names = list(speeds)
    count = len(names)
    sizes = rung_sizes(count, eta)
    units = [eta ** r for r in range(len(sizes))]
    increments = [units[0]] + [units[r] - units[r - 1] for r in range(1, len(units))]
    left = budget_seconds - spent_seconds
    search = search_share * left
    mean_rate = sum(s.seconds_per_image for s in speeds.values()) / count
    mean_overhead = sum(s.overhead_seconds for s in speeds.values()) / count
    fixed = sum(sizes) * mean_overhead
    per_unit_image = mean_rate * sum(n * d for n, d in zip(sizes, increments))
    largest_batch = max(s.batch_size for s in speeds.values())
    unit = (search - fixed) / per_unit_image if search > fixed else 0.0
    if unit < largest_batch:
        needed = spent_seconds + (fixed + largest_batch * per_unit_image) / search_share
        raise ConfigError(
            f"a budget of {budget_seconds / 60:.1f} minutes leaves too little for {count} candidates: giving each "
            f"one batch per rung unit needs about {math.ceil(needed / 60)} minutes on this machine. Raise "
            "--budget-minutes, or name fewer --methods")
    unit = min(unit, float(train_images))
    steps = {name: max(1, int(round(unit / speeds[name].batch_size))) for name in names}
    final = left - search
    horizon = {}
    for name in names:
        images_per_unit = steps[name] * speeds[name].batch_size
        extra = int(final // (images_per_unit * speeds[name].seconds_per_image))
        horizon[name] = units[-1] + max(0, extra)
    notes = []
    if unit >= train_images:
        notes.append(f"a unit is capped at one pass over the {train_images} training images")
    return Plan(eta=eta, unit_images=int(round(unit)), rung_sizes=sizes, rung_units=units, steps_per_unit=steps,
                horizon_units=horizon, planned_search_seconds=round(search, 1), planned_final_seconds=round(final, 1),
                notes=notes)


def schedule_overrides(config, horizon_units: int, steps_per_unit: int, planned_units: Optional[int] = None,
                       trained_units: int = 0) -> List[str]:
    """`--set` values that run `config` for `horizon_units` units of `steps_per_unit` steps, its warmup
    and piecewise boundaries kept as the same share of the run.

    A run planned for `planned_units` and re-sized to `horizon_units` after `trained_units` keeps the
    part it has trained through: its warmup and every boundary it has passed stay where the plan put
    them; the rest of the schedule stretches to the new horizon.
    """
    epochs = config.trainer.epochs
    scale = horizon_units / epochs
    before = (planned_units or horizon_units) / epochs
    overrides = [f"trainer.epochs={horizon_units}", f"trainer.steps_per_epoch={steps_per_unit}",
                 "trainer.checkpoint_every=1"]
    optimizer = config.optimizer
    if optimizer.warmup_epochs:
        overrides.append(f"optimizer.warmup_epochs={round(optimizer.warmup_epochs * before, 4)!r}")
    if optimizer.boundaries:
        moved = [b * before if b * before <= trained_units else b * scale for b in optimizer.boundaries]
        overrides.append(f"optimizer.boundaries=[{', '.join(repr(round(b, 4)) for b in moved)}]")
    return overrides


def seconds_of(names: Sequence[str], speeds: Dict[str, Speed], plan: Plan, units: int) -> float:
    """Estimated seconds to train each of `names` for `units` more units, with a trial's overhead each."""
    total = 0.0
    for name in names:
        speed = speeds[name]
        total += units * plan.steps_per_unit[name] * speed.batch_size * speed.seconds_per_image + speed.overhead_seconds
    return total
