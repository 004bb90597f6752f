"""The sql-server users file: who may connect to `gridpersona sql-server`, with which role.

One line per user, ``name:role:pbkdf2_sha256$iterations$salt_b64$hash_b64`` (role ``analyst`` or ``pii``),
file mode 0600. Python writes it (``gridpersona sql-user``); the server's authenticator
(``jvm/src/gridpersona/sqlguard/Users.java``) verifies passwords with the same PBKDF2-HMAC-SHA256 and a
constant-time comparison, and re-reads the file when it changes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import stat
import tempfile

from gridpersona.analyst.guard import ROLES

ITERATIONS = 200_000
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UsersFileError(ValueError):
    """The users file or a user entry is wrong; the message says which and what to do."""


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    kind, iterations, salt, digest = encoded.split("$")
    computed = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), base64.b64decode(salt), int(iterations))
    return kind == "pbkdf2_sha256" and secrets.compare_digest(computed, base64.b64decode(digest))


def check_mode(path: str) -> None:
    """Refuse a users file that group or others may read or write (the hashes are guessable offline)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise UsersFileError(f"users file {path} has mode {mode:04o}: others may read the password hashes; "
                             f"run chmod 600 {path}")


def read_users(path: str) -> dict[str, tuple[str, str]]:
    """name -> (role, encoded hash); an absent file is an empty one."""
    users: dict[str, tuple[str, str]] = {}
    if not os.path.exists(path):
        return users
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("pbkdf2_sha256$"):
                raise UsersFileError(f"{path} line {number}: expected name:role:pbkdf2_sha256$... with role "
                                     f"{' or '.join(ROLES)}; fix or remove the line (gridpersona sql-user remove)")
            users[parts[0]] = (parts[1], parts[2])
    return users


def write_users(path: str, users: dict[str, tuple[str, str]]) -> None:
    """Replace the file atomically, created 0600 in a 0700 folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sql-users-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# gridpersona sql-server users: name:role:pbkdf2_sha256$iterations$salt$hash "
                    "(edit with `gridpersona sql-user`)\n")
            for name in sorted(users):
                role, encoded = users[name]
                f.write(f"{name}:{role}:{encoded}\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_user(path: str, name: str, role: str, password: str) -> bool:
    """Add or replace ``name``; returns True if the user existed (password and role replaced)."""
    if not _NAME.match(name):
        raise UsersFileError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise UsersFileError(f"role {role!r}: choose {' or '.join(ROLES)}")
    if len(password) < 8:
        raise UsersFileError("password: at least 8 characters")
    users = read_users(path)
    existed = name in users
    users[name] = (role, hash_password(password))
    write_users(path, users)
    return existed


def remove_user(path: str, name: str) -> None:
    users = read_users(path)
    if name not in users:
        raise UsersFileError(f"no user {name!r} in {path}")
    del users[name]
    write_users(path, users)
