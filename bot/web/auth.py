"""Who may use the host's page, and the guards on everything it changes.

- Login: the password of `[web] password_env` / `password_file`, or, with none
  set, a one-time login link with a random token that `framepack-bot run` prints
  when it starts (as Jupyter does). Once used, the link is spent and a new one is
  printed, so the host can log in from another browser without a restart.
- Sessions: a cookie signed by itsdangerous (no cryptography of our own), HttpOnly
  and SameSite=Strict. The signing key is random, kept in the data dir (so logins
  survive a restart) and mixed with the password (so changing it ends every
  session). A session lasts `[web] session_hours`; logging out ends it for good.
- CSRF: each session has a random token that every form carries (a hidden field,
  or the X-CSRF-Token header); a POST without it is refused, whatever the cookie.
- Wrong passwords: five in a row from one address are let through as any other;
  from then on each attempt waits for the last failure's lock to pass (2 s,
  doubling with each failure, at most 5 min), answered 429 meanwhile without the
  password being looked at.

Nothing here logs or shows a password or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from storage.config import Secret

COOKIE = "fpb_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
KEY_FILE = "web-session.key"
FREE_FAILURES = 5  # wrong passwords before each further attempt has to wait
FIRST_LOCK = 2.0  # seconds after the sixth wrong password, doubling each time
MAX_LOCK = 300.0


@dataclass(frozen=True)
class Session:
    """What the cookie holds: an id, the CSRF token, whether it is logged in, since when."""

    sid: str
    csrf: str
    issued_at: float
    logged_in: bool = False
    flash: tuple[str, str] | None = None  # (kind, text) shown once by the next page

    @classmethod
    def new(cls, now: float) -> Session:
        return cls(secrets.token_urlsafe(16), secrets.token_urlsafe(32), now)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sid": self.sid,
            "csrf": self.csrf,
            "iat": self.issued_at,
            "in": self.logged_in,
        }
        if self.flash is not None:
            data["flash"] = list(self.flash)
        return data

    @classmethod
    def from_data(cls, data: Any) -> Session | None:
        if not isinstance(data, dict):
            return None
        try:
            flash = data.get("flash")
            return cls(
                sid=str(data["sid"]),
                csrf=str(data["csrf"]),
                issued_at=float(data["iat"]),
                logged_in=bool(data["in"]),
                flash=(str(flash[0]), str(flash[1])) if flash else None,
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def session_key(data_dir: Path, password: Secret) -> bytes:
    """The key that signs the cookies: a random secret of this install (created once,
    readable by its owner only) mixed with the password."""
    path = data_dir / KEY_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = secrets.token_bytes(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
    return hmac.new(secret, password.reveal().encode("utf-8"), hashlib.sha256).digest()


class Sessions:
    """Signs and reads session cookies; remembers the sessions that logged out."""

    def __init__(
        self, key: bytes, *, max_age: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._serializer = URLSafeSerializer(key, salt="framepack-bot.web.session")
        self.max_age = max_age
        self.clock = clock
        self._ended: dict[str, float] = {}  # sid -> when it would have expired

    def new(self) -> Session:
        return Session.new(self.clock())

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when it is missing, forged, old or ended."""
        if not cookie:
            return None
        try:
            session = Session.from_data(self._serializer.loads(cookie))
        except BadSignature:
            return None
        if session is None or session.sid in self._ended:
            return None
        if self.clock() - session.issued_at > self.max_age:
            return None
        return session

    def dump(self, session: Session) -> str:
        return self._serializer.dumps(session.to_data())

    def login(self, session: Session) -> Session:
        """A new session for one that proved who it is (a new id and CSRF token, so a
        session planted before the login is worth nothing after it)."""
        self.end(session)
        return replace(Session.new(self.clock()), logged_in=True)

    def end(self, session: Session) -> None:
        now = self.clock()
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.sid] = session.issued_at + self.max_age


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


@dataclass
class LoginLimiter:
    """Wrong passwords per client address: after `free` of them, each attempt waits."""

    free: int = FREE_FAILURES
    first_lock: float = FIRST_LOCK
    max_lock: float = MAX_LOCK
    clock: Callable[[], float] = time.monotonic
    _clients: dict[str, _Failures] = field(default_factory=dict)

    def wait(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        failures = self._clients.get(client)
        return 0.0 if failures is None else max(0.0, failures.locked_until - self.clock())

    def failed(self, client: str) -> None:
        failures = self._clients.setdefault(client, _Failures())
        failures.count += 1
        if failures.count >= self.free:
            lock = self.first_lock * 2 ** (failures.count - self.free)
            failures.locked_until = self.clock() + min(self.max_lock, lock)
        if len(self._clients) > 10_000:  # a scan from many addresses must not fill memory
            self._clients.pop(next(iter(self._clients)))

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


class LoginLink:
    """The one-time token of the login link (used when no password is set)."""

    def __init__(self, on_issue: Callable[[str], None] | None = None) -> None:
        self.on_issue = on_issue
        self.token = ""
        self.issue()

    def issue(self) -> str:
        self.token = secrets.token_urlsafe(32)
        if self.on_issue is not None:
            self.on_issue(self.token)
        return self.token

    def redeem(self, token: str) -> bool:
        """True once for the current token; a used token is replaced by a new one."""
        if not token or not hmac.compare_digest(self.token.encode(), token.encode()):
            return False
        self.issue()
        return True


class Auth:
    """The page's login: a password when one is set, else the one-time link."""

    def __init__(
        self,
        password: Secret,
        sessions: Sessions,
        *,
        limiter: LoginLimiter | None = None,
        on_link: Callable[[str], None] | None = None,
    ) -> None:
        self.password = password
        self.sessions = sessions
        self.limiter = limiter or LoginLimiter()
        self.link = None if password else LoginLink(on_link)

    def check_password(self, given: str) -> bool:
        if not self.password:
            return False
        return hmac.compare_digest(self.password.reveal().encode(), given.encode())
