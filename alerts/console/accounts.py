"""Operator accounts and their sessions, in PostgreSQL.

Passwords are kept only as argon2id hashes (argon2-cffi's defaults, re-hashed when those
change); a session is a random token in an HttpOnly cookie, stored only as its SHA-256, with
the CSRF token that every form of that session must carry. There is no default account: the
first one is made with ``gridwatch console add-user``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridwatch.errors import GridwatchError

SESSION_LIFETIME = timedelta(hours=12)  # one duty shift
MIN_PASSWORD_LENGTH = 12
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_UNKNOWN = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    DUTY_OFFICER = "duty_officer"  # may approve, reject, silence and mark false alarms
    VIEWER = "viewer"  # sees everything, changes nothing


class AccountError(GridwatchError):
    """An account that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role is Role.DUTY_OFFICER


@dataclass(frozen=True)
class Session:
    token: str  # the cookie's value; only its hash is stored
    csrf_token: str
    operator: Operator


def add_operator(conn: psycopg.Connection, name: str, role: Role, password: str) -> None:
    """Create an operator, or set a new password and role for an existing one."""
    if not name.strip() or name != name.strip():
        raise AccountError("an operator name must be non-empty, without surrounding spaces")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    conn.execute(
        "INSERT INTO operators (name, role, password_hash) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
        " password_hash = EXCLUDED.password_hash",
        (name, role.value, _hasher.hash(password)),
    )
    # A new password ends the sessions made with the old one.
    conn.execute("DELETE FROM console_sessions WHERE operator = %s", (name,))


def authenticate(conn: psycopg.Connection, name: str, password: str) -> Operator | None:
    row = conn.execute(
        "SELECT role, password_hash FROM operators WHERE name = %s", (name,)
    ).fetchone()
    stored = row[1] if row else _UNKNOWN
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(stored):
        conn.execute(
            "UPDATE operators SET password_hash = %s WHERE name = %s",
            (_hasher.hash(password), name),
        )
    return Operator(name, Role(row[0]))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(conn: psycopg.Connection, operator: Operator, now: datetime) -> Session:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= %s", (now,))
    conn.execute(
        "INSERT INTO console_sessions (token_sha256, operator, csrf_token, expires_at)"
        " VALUES (%s, %s, %s, %s)",
        (_digest(token), operator.name, csrf, now + SESSION_LIFETIME),
    )
    return Session(token, csrf, operator)


def find_session(conn: psycopg.Connection, token: str, now: datetime) -> Session | None:
    row = conn.execute(
        "SELECT s.csrf_token, o.name, o.role FROM console_sessions s"
        " JOIN operators o ON o.name = s.operator"
        " WHERE s.token_sha256 = %s AND s.expires_at > %s",
        (_digest(token), now),
    ).fetchone()
    if row is None:
        return None
    return Session(token, row[0], Operator(row[1], Role(row[2])))


def close_session(conn: psycopg.Connection, token: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE token_sha256 = %s", (_digest(token),))


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(session.csrf_token, submitted)


def record(
    conn: psycopg.Connection, operator: str, action: str, subject: str = "", note: str = ""
) -> None:
    """Append one line to the operators' audit log (case actions go to the case's own)."""
    conn.execute(
        "INSERT INTO operator_audit (actor, action, subject, note) VALUES (%s, %s, %s, %s)",
        (operator, action, subject, note),
    )
