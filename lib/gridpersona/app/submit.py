"""Helpers for scripts/submit.sh: validate the config before submitting, build the shipped artifacts.

    python -m gridpersona.app.submit plan --env ENV [--conf-dir DIR] [--set KEY=VALUE ...]
        Loads and validates the configuration exactly as the job will (base < env < --set) and
        prints ``key=value`` lines for the shell: backend, config_hash, lake_root, master, and one
        ``conf=KEY=VALUE`` line per ``spark.conf`` entry (so launch-time settings such as
        spark.driver.memory reach spark-submit, where they take effect). Exit 2 on a bad config.

    python -m gridpersona.app.submit build --out-dir DIR --conf-dir DIR [--git-sha SHA]
        Writes DIR/gridpersona.zip (the package, for --py-files, with the code version baked in as
        gridpersona/_build_info.py), DIR/conf/ (a snapshot of the config folder) and DIR/conf.zip
        (the same files, for --archives in cluster deploy mode). Byte-stable for the same sources.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path

from gridpersona import __version__
from gridpersona.config import DEFAULT_CONF_DIR, ConfigError, load_settings

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# A fixed timestamp for zip entries keeps the artifact byte-identical across rebuilds of the same code.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def plan_lines(env: str, overrides: list[str], conf_dir: str | None) -> list[str]:
    """The validated facts submit.sh needs, as ``key=value`` lines."""
    settings = load_settings(env, overrides, conf_dir=conf_dir)
    lines = [
        f"backend={settings.lake.backend}",
        f"config_hash={settings.config_hash()}",
        f"lake_root={settings.lake.root}",
        f"master={settings.spark.master or ''}",
        f"spark_home={_spark_home()}",
    ]
    lines += [f"conf={k}={_conf_text(v)}" for k, v in settings.spark.conf.items()]
    return lines


def _spark_home() -> str:
    """pyspark's own Spark distribution (bin/spark-submit lives here)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    return str(Path(spec.origin).parent) if spec and spec.origin else ""


def _conf_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def build_package_zip(out: Path, code_version: str) -> Path:
    """Zip the gridpersona package (no caches) for ``--py-files``, stamping ``code_version``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    files = sorted(p for p in PACKAGE_DIR.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and p.name != "_build_info.py")
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in files:
            _add(zf, f"gridpersona/{path.relative_to(PACKAGE_DIR).as_posix()}", path.read_bytes())
        _add(zf, "gridpersona/_build_info.py",
             f'"""Written by scripts/submit.sh when it built this artifact."""\nCODE_VERSION = {code_version!r}\n'.encode())
    os.replace(tmp, out)
    return out


def snapshot_conf(conf_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Copy the config folder's YAML files to out_dir/conf and zip them to out_dir/conf.zip."""
    target = out_dir / "conf"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files = sorted(conf_dir.glob("*.yaml")) + sorted(conf_dir.glob("*.yml"))
    if not files:
        raise ConfigError(f"no *.yaml files in config folder {conf_dir}")
    archive = out_dir / "conf.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in files:
            shutil.copyfile(path, target / path.name)
            # Files at the archive's top level: `--archives conf.zip#NAME` unpacks them into ./NAME/.
            _add(zf, path.name, path.read_bytes())
    return target, archive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridpersona.app.submit", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan", help="validate the config and print what submit.sh needs")
    pl.add_argument("--env", default="local")
    pl.add_argument("--conf-dir")
    pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b = sub.add_parser("build", help="build the --py-files zip and the config snapshot")
    b.add_argument("--out-dir", required=True)
    b.add_argument("--conf-dir", default=str(DEFAULT_CONF_DIR))
    b.add_argument("--git-sha", default="", help="appended to the package version: 0.1.0+<sha>")
    args = p.parse_args(argv)
    try:
        if args.command == "plan":
            print("\n".join(plan_lines(args.env, args.overrides, args.conf_dir)))
        else:
            out_dir = Path(args.out_dir)
            code_version = f"{__version__}+{args.git_sha}" if args.git_sha else __version__
            zip_path = build_package_zip(out_dir / "gridpersona.zip", code_version)
            conf, conf_zip = snapshot_conf(Path(args.conf_dir), out_dir)
            print(f"code_version={code_version}\npy_files={zip_path}\nconf_dir={conf}\nconf_zip={conf_zip}")
    except ConfigError as exc:
        print(f"submit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
