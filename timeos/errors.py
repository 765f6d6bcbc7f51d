"""The whole TimeOS exception tree. Every error has a stable wire `code` and a CLI `exit_code`.

TimeOSError               code                 exit http
├── UsageError            usage                   2  400  bad CLI arguments or request shape
├── RulesError            rules_invalid           1  422  rule files failed validation
├── ScheduleError         invalid_schedule        1  400  a cron/every/at/timezone is wrong
├── PayloadError          invalid_payload         1  400  not a JSON object, too big or deep
├── IdempotencyConflict   idempotency_conflict    1  409  same key, different payload
├── Unauthorized          unauthorized            1  401  no or wrong bearer token on the
│                                                         TCP listener (`timeosd --http`)
├── NotFound              not_found               1  404  unknown job, event, rule or API path
├── MethodNotAllowed      method_not_allowed      1  405  an API path asked with a method it
│                                                         does not serve (Allow lists those)
├── InvalidState          invalid_state           1  409  e.g. cancelling a job that ran
├── ConditionFailed       condition_failed        1  422  a `when:` failed on a payload
├── StoreError            store_error             1  500  the database failed (translated in
│                                                         store/sqlite/connection.py only)
└── DaemonUnreachable     daemon_unreachable      3  503  no timeosd on the socket

All are direct subclasses of TimeOSError; tests/test_docs.py keeps this drawing and the classes
in step.
"""

from __future__ import annotations


class TimeOSError(Exception):
    """Root of every error TimeOS raises on purpose."""

    code = "error"
    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, object]:
        """Render as the JSON error body used on the socket API."""
        return {"error": {"code": self.code, "message": self.message}}


class UsageError(TimeOSError):
    code = "usage"
    exit_code = 2
    http_status = 400


class Problem:
    """One validation problem, located as `file:line:col`. Immutable and compared by value.

    Written out rather than a frozen dataclass: every CLI command imports this module, and
    `dataclasses` (with `inspect`) is a tenth of a one-shot `timeos emit`'s start-up.
    """

    __slots__ = ("where", "message")
    __match_args__ = ("where", "message")
    where: str
    message: str

    def __init__(self, where: str, message: str) -> None:
        object.__setattr__(self, "where", where)
        object.__setattr__(self, "message", message)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return (self.where, self.message) == (other.where, other.message)

    def __hash__(self) -> int:
        return hash((self.where, self.message))

    def __repr__(self) -> str:
        return f"Problem(where={self.where!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class RulesError(TimeOSError):
    code = "rules_invalid"
    http_status = 422

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def to_wire(self) -> dict[str, object]:
        body = super().to_wire()
        body["error"]["problems"] = [str(p) for p in self.problems]  # type: ignore[index]
        return body


class ScheduleError(TimeOSError):
    code = "invalid_schedule"
    http_status = 400


class PayloadError(TimeOSError):
    code = "invalid_payload"
    http_status = 400


class IdempotencyConflict(TimeOSError):
    code = "idempotency_conflict"
    http_status = 409


class Unauthorized(TimeOSError):
    code = "unauthorized"
    http_status = 401


class NotFound(TimeOSError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(TimeOSError):
    code = "method_not_allowed"
    http_status = 405


class InvalidState(TimeOSError):
    code = "invalid_state"
    http_status = 409


class ConditionFailed(TimeOSError):
    code = "condition_failed"
    http_status = 422


class StoreError(TimeOSError):
    code = "store_error"
    http_status = 500


class DaemonUnreachable(TimeOSError):
    code = "daemon_unreachable"
    exit_code = 3
    http_status = 503


ALL_ERRORS: tuple[type[TimeOSError], ...] = (
    TimeOSError,
    UsageError,
    RulesError,
    ScheduleError,
    PayloadError,
    IdempotencyConflict,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    InvalidState,
    ConditionFailed,
    StoreError,
    DaemonUnreachable,
)

_BY_CODE = {cls.code: cls for cls in ALL_ERRORS}


def from_wire(code: str, message: str) -> TimeOSError:
    """Rebuild the error the daemon sent, so the CLI exits with the right code."""
    cls = _BY_CODE.get(code, TimeOSError)
    if cls is RulesError:
        return RulesError([Problem("", line) for line in message.splitlines()])
    err = cls(message)
    return err
