"""The SQL guard's jar: compiled from its Java sources with javac, cached, put on a session's class path.

Every session :func:`gridpersona.session.build_spark` launches carries the guard, inert outside the SQL
surface, so that a session started by the pipeline (or a test suite's one shared session) can still serve
``gridpersona sql``: Spark's session extensions are fixed when its first session starts. The guard's
behaviour is :mod:`gridpersona.analyst.guard`; this module is only the jar, below the session factory, so
the foundation does not import the analyst layer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("gridpersona")

EXTENSION_CLASS = "gridpersona.sqlguard.GuardExtension"
# The guard's Java sources live with the analyst layer that enforces it (analyst/jvm/src).
SOURCE_DIR = Path(__file__).resolve().parent / "analyst" / "jvm" / "src"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class GuardUnavailable(RuntimeError):
    """The guard jar is neither cached nor buildable (no javac); the message says what to install."""


def _spark_home() -> str:
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


def _cache_dir() -> Path:
    base = os.environ.get("GRIDPERSONA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gridpersona")
    return Path(base)


def _sources() -> list[Path]:
    return sorted(SOURCE_DIR.rglob("*.java"))


def jar_path() -> Path:
    """Where the jar for these sources and this Spark version lives (it may not exist yet)."""
    import pyspark

    digest = hashlib.sha256(f"spark {pyspark.__version__}\n".encode())
    for src in _sources():
        digest.update(src.relative_to(SOURCE_DIR).as_posix().encode() + b"\0" + src.read_bytes() + b"\0")
    return _cache_dir() / f"gridpersona-sqlguard-{pyspark.__version__}-{digest.hexdigest()[:16]}.jar"


def build_jar() -> Path:
    """Compile the guard with javac against $SPARK_HOME/jars/* into the cache (a few seconds); returns the jar."""
    target = jar_path()
    if target.is_file():
        return target
    javac = shutil.which("javac")
    if not javac:
        raise GuardUnavailable(
            "the SQL guard needs a Java compiler once (javac, from a JDK such as Debian's openjdk-17-jdk-headless; "
            "`make setup` installs it), and no built guard is cached in " + str(target.parent))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sqlguard-") as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        cmd = [javac, "-nowarn", "-encoding", "UTF-8", "--release", "17", "-d", str(classes),
               "-cp", os.path.join(_spark_home(), "jars", "*"), *map(str, _sources())]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:300])
            raise GuardUnavailable(f"javac could not build the SQL guard from {SOURCE_DIR}: {first}")
        partial = Path(tmp) / "guard.jar"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            info = zipfile.ZipInfo("META-INF/MANIFEST.MF", date_time=_ZIP_TIME)
            jar.writestr(info, "Manifest-Version: 1.0\r\nCreated-By: gridpersona\r\n\r\n")
            for cls in sorted(classes.rglob("*.class")):
                info = zipfile.ZipInfo(cls.relative_to(classes).as_posix(), date_time=_ZIP_TIME)
                jar.writestr(info, cls.read_bytes())
        # Rename into place: a concurrent builder's identical jar wins or loses without a torn file.
        tmp_target = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(partial, tmp_target)
        os.replace(tmp_target, target)
    log.debug("built the SQL guard: %s", target)
    return target


def available_jar() -> Path | None:
    """The guard jar, built if needed and possible; None (quietly) where it cannot be: the pipeline runs without."""
    try:
        return build_jar()
    except (GuardUnavailable, OSError) as exc:
        log.debug("SQL guard unavailable: %s", exc)
        return None


def session_conf(jar: Path, conf: dict[str, str]) -> dict[str, str]:
    """``conf`` plus the guard: jar on the driver class path, extension appended to spark.sql.extensions."""
    out = dict(conf)
    exts = [e for e in out.get("spark.sql.extensions", "").split(",") if e.strip()]
    out["spark.sql.extensions"] = ",".join(exts + ([EXTENSION_CLASS] if EXTENSION_CLASS not in exts else []))
    cp = [p for p in out.get("spark.driver.extraClassPath", "").split(os.pathsep) if p]
    out["spark.driver.extraClassPath"] = os.pathsep.join(cp + [str(jar)])
    return out
