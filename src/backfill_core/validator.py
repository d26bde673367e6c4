"""The validator contract: named metrics computed by SQL the engine runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sqlalchemy.sql import Select


@dataclass(frozen=True, slots=True)
class Metric:
    """A ratio ``numerator / denominator`` of two scalar count queries.

    With a ``threshold`` the metric passes when the ratio is at least the threshold (or when
    the denominator is zero: nothing to cover). Without one it is reported for information.
    """

    name: str
    description: str
    numerator: Select[Any]
    denominator: Select[Any]
    threshold: float | None = 0.95
    extractor: str | None = None
    """The extractor whose result this checks: after ``backfill run`` the metric is computed only
    if that extractor ran. None: whenever the validator runs."""


@dataclass(frozen=True, slots=True)
class MetricResult:
    validator: str
    name: str
    description: str
    numerator: int
    denominator: int
    threshold: float | None

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    @property
    def passed(self) -> bool:
        if self.threshold is None or self.value is None:
            return True
        return self.value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "validator": self.validator,
            "metric": self.name,
            "description": self.description,
            "value": self.value,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "threshold": self.threshold,
            "passed": self.passed,
        }


class Validator(ABC):
    """Checks the result of one or more extractors over the whole database.

    ``metrics`` builds SQLAlchemy Core queries; it does no I/O itself, the engine runs them.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    covers: ClassVar[Sequence[str]] = ()
    """Extractor names after which this validator runs."""
    tables: ClassVar[dict[str, Sequence[str]]] = {}
    """Tables and columns the queries read, checked before they run."""

    @abstractmethod
    def metrics(self) -> Sequence[Metric]:
        """Return the metrics to compute."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')}>"
