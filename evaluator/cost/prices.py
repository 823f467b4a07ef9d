"""The price table of the report's cost estimate: USD per node-hour by node type, read from YAML and validated
once, before anything runs.

The packaged `evaluator/cost/prices.yaml` holds AWS on-demand list prices for the instance types our manifests use;
`--prices FILE` (PRICES_FILE) replaces it whole, so that one file says where every figure came from. A node's
type is named by `evaluator.cost.node_clock.node_type`. A type the table lacks is never priced at zero: nodes that
could host the workers when the evaluation starts must be priced (else exit 2), and one that only appears
later is listed as `unpriced` in the report's cost block, with a warning.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, field_validator

from sim.errors import UsageError, validation_line

DEFAULT_PRICES_FILE = Path(__file__).with_name("prices.yaml")


class PriceTable(BaseModel):
    """A price table file. Frozen; `path` is where it was read from (not a field of the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: str = Field(description="when the prices were taken (a date)")
    source: str = Field(min_length=1, description="where they come from: provider, region, price kind")
    prices: dict[str, NonNegativeFloat] = Field(min_length=1, description="USD per node-hour by node type")
    path: str = Field(default="", exclude=True)

    @field_validator("as_of", mode="before")
    @classmethod
    def _date_as_text(cls, value: object) -> object:
        """YAML reads an unquoted 2025-05-01 as a date."""
        return value.isoformat() if isinstance(value, datetime.date) else value

    def usd_per_hour(self, node_type: str) -> float | None:
        """The price of a node-hour of `node_type`; None when the table has none (never a silent zero)."""
        return self.prices.get(node_type)

    def require(self, node_types: Iterable[str]) -> None:
        """Raise UsageError naming the types of `node_types` the table does not price, and the file."""
        missing = sorted({t for t in node_types if t not in self.prices})
        if missing:
            names = ", ".join(repr(t) for t in missing)
            raise UsageError(
                f"no price for node type {names} in the price table {self.path}: add it (USD per node-hour), "
                "or label the nodes with a priced `instance-type` (--prices / PRICES_FILE)"
            )

    @property
    def described(self) -> str:
        where = "the packaged evaluator/cost/prices.yaml" if self.path == str(DEFAULT_PRICES_FILE) else self.path
        return f"{self.source}, as of {self.as_of} ({where})"


def load_prices(path: Path | None = None) -> PriceTable:
    """The table at `path` (default: the packaged one); a file that cannot be read, is not YAML or does not fit
    the format is a one-line UsageError naming the file."""
    path = path or DEFAULT_PRICES_FILE
    try:
        parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(
            f"cannot read the price table {path}: {exc.strerror or exc}; check --prices / PRICES_FILE"
        ) from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).strip().splitlines()[:3])
        raise UsageError(f"price table {path} is not valid YAML: {first}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"price table {path}: expected a mapping with as_of, source and prices")
    try:
        return PriceTable.model_validate({**parsed, "path": str(path)})
    except ValidationError as exc:
        raise UsageError(f"price table {path}: {validation_line(exc)}") from None
