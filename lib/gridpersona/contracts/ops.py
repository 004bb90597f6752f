"""Ops contracts: the run log every stage appends to (ops.job_runs).

A stage's row with status ``succeeded`` publishes the versions it wrote
(``versions_written``): readers see a stage's outputs only once it is there.
"""

from __future__ import annotations

from gridpersona.contracts.base import D, DT, I, L, S, TS, Column, TableSpec

JOB_RUNS = TableSpec(
    "ops.job_runs",
    "One row when a stage starts (`running`) and one when it ends (`succeeded` or `failed`); appended, never "
    "rewritten. Written through the lake's run-log lock by every stage run.",
    (
        Column("run_id", S, "Id of the run that ran the stage.", nullable=False),
        Column("stage", S, "Stage name (`clean`, `shapes`, ..., `profile`).", nullable=False),
        Column("as_of", DT, "As-of date of the run.", nullable=False),
        Column("window_days", I, "Days of the run's window.", "days"),
        Column("started_at", TS, "Instant the stage started (UTC).", nullable=False),
        Column("duration_s", D, "Seconds the stage took (null on its `running` row).", "s"),
        Column("status", S, "`running`, `succeeded` or `failed`.", nullable=False),
        Column("rows_in", L, "Rows the stage read from its main input.", "rows"),
        Column("rows_out", L, "Rows the stage wrote, all outputs.", "rows"),
        Column("outputs", S, "JSON {table: rows written}."),
        Column("error", S, "A failed stage's error and the last frames of its traceback (at most 4,000 "
               "characters)."),
        Column("config_hash", S, "Hash of the effective configuration."),
        Column("code_version", S, "Code version (package version and git commit when known)."),
        Column("env", S, "Configuration environment (`--env`)."),
        # Added with publishing (appended to an older table's schema on its first new row).
        Column("pid", I, "Process id of the stage's driver."),
        Column("host", S, "Host of the stage's driver."),
        Column("versions_read", S, "JSON {table: Delta version} of the inputs the stage pinned."),
        Column("versions_written", S, "JSON {table: Delta version}: what a `succeeded` row publishes."),
        # Added with incremental runs.
        Column("dates", S, "Dates an incremental run of clean or shapes (re)wrote, runs of days joined "
               "(`2026-06-01..2026-06-03,2026-06-10`); empty: nothing new; null: every date of the window."),
    ),
    keys=("run_id", "stage", "status"),
)

SPECS = (JOB_RUNS,)
