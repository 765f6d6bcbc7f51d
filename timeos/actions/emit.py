"""The `emit` action: raise a new event through the daemon's emitter, carrying the job's payload."""

from __future__ import annotations

from timeos.actions.context import ActionContext, Emitter, describe
from timeos.errors import StoreError, TimeOSError
from timeos.model import ActionResult, EmitSpec, Outcome


async def run_emit(spec: EmitSpec, ctx: ActionContext, *, emitter: Emitter) -> ActionResult:
    """Emit `spec.event_type` with the job's payload; output is `emitted <event id>`."""
    try:
        event_id = await emitter(spec.event_type, ctx.payload, ctx)
    except StoreError as exc:  # e.g. "database is locked": transient, worth retrying
        return ActionResult(Outcome.FAILED, exc.message)
    except TimeOSError as exc:
        # Rejected on purpose (bad payload, idempotency conflict...): a retry gets the same answer.
        return ActionResult(Outcome.PERMANENT, exc.message)
    except Exception as exc:  # e.g. the store is briefly unavailable: worth retrying
        return ActionResult(Outcome.FAILED, describe(exc))
    return ActionResult(Outcome.SUCCEEDED, None, f"emitted {event_id}")
