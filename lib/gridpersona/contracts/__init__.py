"""Every table's contract, written once: columns, types, nullability, keys, partitioning and meanings.

One module per layer (``bronze``, ``silver``, ``ops``, ``truth``) and per area of
gold (``segments``, ``tags``, ``campaigns``), in the style of :mod:`.base`.
Stages take table names and partitioning from here; ``docs/data_dictionary.md``
is rendered from here (:mod:`.dictionary`, ``make docs``).

gold.customer_tags has a column per tag of conf/tags.yaml: its registry entry
holds the fixed columns; :func:`gridpersona.contracts.tags.customer_tags_spec`
gives the whole contract for a set of tag definitions.

The bottom layer of the package: imports nothing from gridpersona but itself.
"""

from __future__ import annotations

from gridpersona.contracts import advice, bronze, campaigns, ops, segments, silver, tags, truth
from gridpersona.contracts import forecast
from gridpersona.contracts import anomalies
from gridpersona.contracts.base import LAYERS, Column, TableSpec

__all__ = ["LAYERS", "Column", "TableSpec", "all_specs", "layer_specs", "pii_columns", "spec_for"]

_SPECS: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        *bronze.BRONZE.values(), bronze.INGEST_REJECTS,
        *silver.SPECS,
        *segments.SPECS, *advice.SPECS, *tags.SPECS, *campaigns.SPECS,
        *forecast.SPECS,
        *anomalies.SPECS,
        *ops.SPECS,
        *truth.TRUTH.values(),
    )
}


def all_specs() -> dict[str, TableSpec]:
    """Every table's contract by name (``layer.table``), layer by layer in the order data flows."""
    return {s.name: s for layer in LAYERS for s in _SPECS.values() if s.layer == layer}


def spec_for(table: str) -> TableSpec | None:
    """The contract of ``table`` (``layer.table``); None for a name no contract has."""
    return _SPECS.get(table)


def layer_specs(layer: str) -> list[TableSpec]:
    """The contracts of one layer of LAYERS, in the order their modules list them."""
    if layer not in LAYERS:
        raise ValueError(f"layer {layer!r}: expected one of {', '.join(LAYERS)}")
    return [s for s in _SPECS.values() if s.layer == layer]


def pii_columns() -> set[str]:
    """Names of the columns any contract marks as customer PII (they stay in bronze)."""
    return {c.name for spec in _SPECS.values() for c in spec.columns if c.pii}
