"""Value types of the ``cfg.SNIPER`` keys: the two config conventions decoded once, for every module.

* A ``SCALES`` entry equal to :data:`FIT_SCALE` (-1) means "resize the whole image so that its long
  side equals ``CHIP_SIZE``" (:func:`is_fit`).
* A ``VALID_RANGES`` upper bound equal to :data:`NO_UPPER_BOUND` (-1) means infinity
  (:class:`ValidRange`, :func:`parse_scales`).

Sizes are ``sqrt(w * h)`` of boxes in ORIGINAL-image pixels; scales are resize factors. Standard
library only (no numpy import needed; the masks work on numpy arrays and torch tensors alike).
"""

import math
from dataclasses import dataclass

__all__ = ["FIT_SCALE", "NO_UPPER_BOUND", "ConfigError", "ValidRange", "is_fit", "scale_label", "parse_scales"]

# A scale entry equal to this value means "resize the whole image so that its long side equals
# CHIP_SIZE": a single chip then covers the whole image (SNIPER's coarsest pyramid level).
FIT_SCALE = -1.0
# A valid-range upper bound equal to this value in a config means "no upper bound" (infinity).
NO_UPPER_BOUND = -1.0


class ConfigError(ValueError):
    """A config whose keys exist but whose values cannot work together (message names them)."""


def is_fit(scale_entry):
    """True when a ``SCALES`` entry is ``FIT_SCALE``: the image resized so its long side is ``CHIP_SIZE``."""
    return float(scale_entry) == FIT_SCALE


def scale_label(scale_entry):
    """A ``SCALES`` entry as tables and figures name it: ``"fit"`` for ``FIT_SCALE``, else ``"1.667x"``."""
    return "fit" if is_fit(scale_entry) else f"{float(scale_entry):g}x"


@dataclass(frozen=True)
class ValidRange:
    """The object sizes one pyramid scale is responsible for: ``sqrt(w * h)`` in ORIGINAL-image pixels.

    Attributes:
        lo (float): lower bound, >= 0.
        hi (float): upper bound, > lo; ``math.inf`` for none (written ``-1`` in configs).

    Training and test use the two half-open variants: a training box is valid when
    ``lo <= size < hi`` (:meth:`train_mask`), a test detection is kept when ``lo < size <= hi``
    (:meth:`test_mask`).
    """

    lo: float
    hi: float = math.inf

    def __post_init__(self):
        lo, hi = float(self.lo), float(self.hi)
        if not (math.isfinite(lo) and lo >= 0 and hi > lo):  # NaN fails too
            raise ConfigError(f"valid range ({self.lo}, {self.hi}) is empty or negative: it needs 0 <= lo < hi "
                              f"(hi = {NO_UPPER_BOUND:g} for no upper bound)")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def parse(cls, value):
        """A ``ValidRange`` from a config pair ``(lo, hi)`` (hi ``-1``, ``inf`` or None: no upper
        bound), or ``value`` itself when it already is one.

        Raises:
            ConfigError: not a pair of numbers, or an empty / negative range.
        """
        if isinstance(value, cls):
            return value
        try:
            lo, hi = value
            hi = math.inf if hi is None or float(hi) == NO_UPPER_BOUND else float(hi)
            lo = float(lo)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"valid range {value!r} is not a pair (lo, hi) of numbers") from e
        return cls(lo, hi)

    def __iter__(self):
        """``lo, hi = valid_range`` unpacks the bounds (hi = ``math.inf`` when there is none)."""
        return iter((self.lo, self.hi))

    def to_cfg(self):
        """``(lo, hi)`` as a config writes it: hi ``-1`` for no upper bound (JSON-ready floats)."""
        return (self.lo, NO_UPPER_BOUND if math.isinf(self.hi) else self.hi)

    def train_mask(self, sizes):
        """(N,) bool: ``lo <= size < hi`` (a box is a valid training positive at this scale).

        Args:
            sizes: (N,) ``sqrt(w * h)`` in original pixels (numpy array or torch tensor).
        """
        return (sizes >= self.lo) & (sizes < self.hi)

    def test_mask(self, sizes):
        """(N,) bool: ``lo < size <= hi`` (a test detection is kept at this scale).

        Args:
            sizes: (N,) ``sqrt(w * h)`` in original pixels (numpy array or torch tensor).
        """
        return (sizes > self.lo) & (sizes <= self.hi)


def parse_scales(scales, valid_ranges, section="SNIPER"):
    """Decode ``<section>.SCALES`` and ``<section>.VALID_RANGES`` together.

    Args:
        scales: resize factors (> 0, finite) or ``FIT_SCALE`` (-1).
        valid_ranges: one ``(lo, hi)`` per scale (hi -1 = infinity), or :class:`ValidRange` s.
        section (str): "SNIPER" or "SNIPER.TEST", for the messages.

    Returns:
        (scales tuple[float], valid_ranges tuple[ValidRange]), of equal, non-zero length.

    Raises:
        ConfigError: naming the key and the entry that is wrong.
    """
    scales, valid_ranges = tuple(scales), tuple(valid_ranges)
    if not scales:
        raise ConfigError(f"{section}.SCALES is empty: give at least one scale")
    if len(scales) != len(valid_ranges):
        raise ConfigError(f"{section}.SCALES has {len(scales)} entries but {section}.VALID_RANGES has "
                          f"{len(valid_ranges)}: give one (lo, hi) range per scale")
    out = []
    for s in scales:
        try:
            s = float(s)
        except (TypeError, ValueError):
            s = math.nan
        if not (is_fit(s) or (s > 0 and math.isfinite(s))):
            raise ConfigError(f"{section}.SCALES entry {s} is neither a positive factor nor "
                              f"{FIT_SCALE:g} (fit the long side to CHIP_SIZE)")
        out.append(s)
    ranges = []
    for r in valid_ranges:
        try:
            ranges.append(ValidRange.parse(r))
        except ConfigError as e:
            raise ConfigError(f"{section}.VALID_RANGES: {e}") from e
    return tuple(out), tuple(ranges)
