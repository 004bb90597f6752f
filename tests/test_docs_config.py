"""Config validation, the data dictionary and the CLI's error surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gridpersona.app import cli
from gridpersona.config import ConfigError, load_settings
from gridpersona.contracts import LAYERS, all_specs, spec_for
from gridpersona.contracts.base import TableSpec
from gridpersona.contracts.dictionary import render

ROOT = Path(__file__).resolve().parents[1]


def test_data_dictionary_matches_the_contracts():
    committed = (ROOT / "docs" / "data_dictionary.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/data_dictionary.md is stale: run `make docs`"


def test_data_dictionary_documents_every_layer_and_every_contract():
    text = render()
    headings = [line for line in text.splitlines() if line.startswith("# ")]
    for layer in LAYERS:
        assert any(h.lower().startswith(f"# {layer}") or (layer == "truth" and "truth" in h.lower())
                   for h in headings), layer
    for name, spec in all_specs().items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        assert all(f"| `{c.name}` | {c.dtype.simpleString()} |" in section for c in spec.columns), name
    # gold.customer_tags' tag columns follow conf/tags.yaml: the dictionary says so and links the tag docs.
    tags_section = text.split("## `gold.customer_tags`\n", 1)[1].split("\n## ", 1)[0]
    assert "conf/tags.yaml" in tags_section and "(tags.md)" in tags_section


def test_every_table_a_stage_reads_or_writes_has_a_contract():
    from gridpersona.stages.pipeline import STAGES

    named = {t for stage in STAGES for t in (*stage.inputs, *stage.outputs)}
    assert named and not {t for t in named if spec_for(t) is None}
    assert {t for stage in STAGES for t in stage.outputs} == {s.name for s in all_specs().values()
                                                               if s.layer in ("silver", "gold")}


def _lake_writes(tree):
    """(call, table argument) of every ``<...lake...>.replace/append/overwrite/write/write_arrow`` call."""
    import ast

    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("replace", "append", "overwrite", "write", "write_arrow")
                and "lake" in ast.unparse(node.func.value).lower()):
            index = 0 if node.func.attr == "write_arrow" else 1
            table = node.args[index] if len(node.args) > index else next(
                (k.value for k in node.keywords if k.arg == "table"), None)
            if table is not None:
                yield node, table


def test_tables_the_package_writes_and_names_are_contract_names():
    import ast
    import importlib
    import re

    layer_table = re.compile(rf"^({'|'.join(LAYERS)})\.[a-z_]+$")
    resolved, unknown, literals = 0, [], []
    for path in sorted((ROOT / "lib" / "gridpersona").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT / "lib").with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and layer_table.match(node.value):
                literals.append((module, node.value))
        writes = list(_lake_writes(tree))
        if not writes:
            continue
        namespace = vars(importlib.import_module(module))
        for node, table in writes:
            try:  # a contract's name (SPEC.name, a module-level name) resolves; a local variable does not
                name = eval(compile(ast.Expression(table), str(path), "eval"), dict(namespace))
            except NameError:
                continue
            resolved += 1
            if isinstance(name, TableSpec):  # a write given the contract itself must be given the registered one
                name = name.name if spec_for(name.name) is name else f"unregistered contract {name.name}"
            if spec_for(name) is None:
                unknown.append(f"{module}:{node.lineno} writes {name!r}")
    assert resolved >= 15, resolved  # the stages' writes are checked, not skipped
    assert not unknown, unknown
    assert not [f"{m}: {v!r}" for m, v in literals if spec_for(v) is None]


def test_layers_merge_base_env_and_overrides():
    s = load_settings("test", ["lake.root=/data/x", "generate.meters=12", "spark.conf.spark.sql.shuffle.partitions=3"])
    assert s.lake.root == "/data/x"
    assert s.generate.meters == 12
    assert s.spark.master == "local[2]"  # from conf/test.yaml
    assert s.ami.time_zone == "Asia/Shanghai"  # from conf/base.yaml
    assert s.spark.conf["spark.sql.shuffle.partitions"] == 3
    # The env layer keeps its sibling keys: the driver memory conf/test.yaml sets survives the override.
    env_conf = yaml.safe_load((ROOT / "conf" / "test.yaml").read_text(encoding="utf-8"))["spark"]["conf"]
    assert s.spark.conf["spark.driver.memory"] == env_conf["spark.driver.memory"]


def test_unknown_key_names_the_file_and_key(tmp_path):
    (tmp_path / "base.yaml").write_text("lake:\n  root: ./lake\n")
    (tmp_path / "prod.yaml").write_text("lake:\n  rooot: /data\n")
    with pytest.raises(ConfigError) as err:
        load_settings("prod", conf_dir=tmp_path)
    assert f"{tmp_path / 'prod.yaml'}: unknown key 'lake.rooot'" in str(err.value)


def test_wrong_type_names_the_override():
    with pytest.raises(ConfigError, match=r"--set generate.days=many: key 'generate.days'"):
        load_settings("test", ["generate.days=many"])


def test_missing_environment_file_is_named():
    with pytest.raises(ConfigError, match=r"conf/nowhere.yaml"):
        load_settings("nowhere")


def test_bad_values_are_refused_before_spark(tmp_path):
    with pytest.raises(ConfigError, match="ami.time_zone.*unknown time zone 'Mars/Olympus'"):
        load_settings("test", ["ami.time_zone=Mars/Olympus"])
    with pytest.raises(ConfigError, match="covered 2 times"):
        load_settings("test", ['tariff.flat=["07:00-12:00"]'])
    with pytest.raises(ConfigError, match="ami.interval_minutes"):
        load_settings("test", ["ami.interval_minutes=20"])
    with pytest.raises(ConfigError, match="unknown archetype"):
        load_settings("test", ["generate.archetype_mix={solar: 1.0}"])


def test_cli_reports_config_errors_without_traceback(capsys):
    code = cli.main(["--env", "test", "--set", "lake.nope=1", "tables"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown key 'lake.nope'" in err and "Traceback" not in err


def test_cli_tables_lists_versions_rows_and_sizes(capsys, spark, lake):
    import datetime as dt

    df = spark.createDataFrame([("m1", 1.0, dt.date(2026, 6, 1))], "meter_id string, kwh double, date date")
    lake.append(df, "bronze.x", partition_by=["date"])
    lake.append(df, "bronze.x")
    code = cli.main(["--env", "test", "--set", f"lake.root={lake.root}", "tables"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("bronze.x"))
    assert line.split()[:3] == ["bronze.x", "1", "2"]  # version 1, 2 rows
    assert "date" in line
