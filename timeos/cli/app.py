"""`timeos`, the CLI: parses arguments, calls the daemon through client.py, renders the answer.

Thin on purpose. Heavy modules (rich, rules, schedule) are imported inside the commands that use
them, so `timeos emit` starts fast. Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable.
"""

# No `from __future__ import annotations` here: typer would have to eval every string annotation
# of every command on each call (measured: 35 ms of `timeos emit`'s start-up, vs 13 ms without).
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# typer 0.28 vendors its own click (pyproject pins typer below 0.29): reach it through typer.
from typer._click.globals import get_current_context
from typer.core import TyperGroup, TyperOption

from timeos import __version__, paths
from timeos.cli.client import Client, segment
from timeos.cli.emit import emit_event
from timeos.cli.entry import fail
from timeos.errors import NotFound, TimeOSError, UsageError

HELP = {"help_option_names": ["-h", "--help"]}
STATUSES = ("pending", "blocked", "running", "succeeded", "retrying", "dead", "cancelled")

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=HELP,
    help="Talk to timeosd: emit events, inspect and cancel jobs, manage dead letters and rules.",
)
events_app = typer.Typer(no_args_is_help=True, context_settings=HELP, help="Query stored events.")
jobs_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP, help="Inspect and cancel jobs; read their output."
)
dlq_app = typer.Typer(
    no_args_is_help=True,
    context_settings=HELP,
    help="The dead letter queue: jobs out of attempts or failed permanently.",
)
rules_app = typer.Typer(
    no_args_is_help=True,
    context_settings=HELP,
    help="Loaded rules; offline validation of rule files.",
)
app.add_typer(events_app, name="events")
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(rules_app, name="rules")


def _complete_status(incomplete: str) -> list[str]:
    return [s for s in STATUSES if s.startswith(incomplete)]


def _complete_rule(ctx: typer.Context, incomplete: str) -> list[str]:
    """Rule names from the running daemon (nothing, quickly, when it is not there)."""
    given = ctx.params.get("socket_path") or _settings(ctx).get("socket")
    try:
        client = Client(Path(given) if given else paths.default_socket(os.environ), timeout=1.0)
        names = [r["name"] for r in client.call("GET", "/v1/rules")["rules"]]
    except (TimeOSError, OSError, KeyError, TypeError):
        return []
    return [n for n in names if n.startswith(incomplete)]


SocketOpt = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        help="timeosd's Unix socket [env TIMEOS_SOCKET; else /run/timeos/timeos.sock; else XDG].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Rows per page (1..1000).")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Rows to skip.")]
RuleOpt = Annotated[
    str | None,
    typer.Option("--rule", help="Only jobs of this rule.", autocompletion=_complete_rule),
]


def _not_empty(value: Any) -> Any:
    """Refuse an empty id or name: it would make the URL another route (`/v1/jobs/`)."""
    if value == "" or (isinstance(value, list) and "" in value):
        raise typer.BadParameter("must not be empty")
    return value


RuleArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="A rule's name.",
        autocompletion=_complete_rule,
        callback=_not_empty,
    ),
]
IdArg = Annotated[str, typer.Argument(metavar="ID", callback=_not_empty)]

# Display options every printing command accepts after its name as well as before it
# (`timeos --utc jobs list` = `timeos jobs list --utc`); main() adds them to each command.
DISPLAY_OPTIONS = {
    "utc": "Show times in UTC instead of your zone ($TZ, else the system's).",
    "wide": "On a terminal, show every column, nothing shortened.",
    "no_headers": "Leave out the header line of tab-separated output.",
}
NO_DISPLAY = {
    "emit",
    "emit-batch",
    "cancel",
    "retry",
    "delete",
    "check",
    "reload",
    "disable",
    "enable",
    "set",
    "reset",
    "run",
}


def _settings(ctx: Any = None) -> dict[str, Any]:
    """Options given before the command or after it, collected in the root context."""
    ctx = ctx or get_current_context(silent=True)
    if ctx is None:
        return {}
    found: dict[str, Any] = ctx.find_root().meta.setdefault("timeos", {})
    return found


def _remember(ctx: Any, param: Any, value: Any) -> Any:
    if value and param.name:
        _settings(ctx)[param.name] = value
    return value


CANCEL_BATCH = 1000  # timeosd's MAX_CANCEL_IDS (a test keeps the two equal)


def _client(socket_path: Path | None) -> Client:
    given = socket_path or _settings().get("socket")
    # keep_alive: commands that page or chunk (cancel, dlq, emit-batch) send several requests.
    return Client(Path(given) if given else paths.default_socket(os.environ), keep_alive=True)


def _json(as_json: bool) -> bool:
    return as_json or bool(_settings().get("json"))


def _view() -> Any:
    from timeos.cli.output import make_view

    given = _settings()
    return make_view(
        utc=bool(given.get("utc")),
        wide=bool(given.get("wide")),
        headers=not given.get("no_headers"),
        environ=os.environ,
    )


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _show_sheet(sheet: Any) -> None:
    from timeos.cli.output import print_sheet

    print_sheet(sheet, _view())


def _show_panel(panel: Any) -> None:
    from timeos.cli.output import print_panel

    print_panel(panel, _view())


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        sys.stderr.write(f"Warning: {warning}\n")


# ---- emit -------------------------------------------------------------------------------------


@app.command()
def emit(
    event_type: Annotated[
        str, typer.Argument(metavar="TYPE", help="Event type, e.g. user_signup.")
    ],
    payload: Annotated[
        str | None, typer.Option("--payload", help="JSON object, or - to read stdin.")
    ] = None,
    payload_file: Annotated[
        Path | None, typer.Option("--payload-file", help="Read the JSON object from a file.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Same key + same payload = same event, no new jobs."
        ),
    ] = None,
    occurred_at: Annotated[
        str | None,
        typer.Option("--occurred-at", help="When it happened: ISO 8601 with Z or an offset."),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Emit an event; rules that match it create jobs. Prints the event id.

    --json: {id, duplicate, jobs, cancelled, debounced}: the waiting jobs its rules' cancel_on
    cancelled, and those a debounce gave its payload instead of new jobs.

    Example: timeos emit user_signup --payload '{"user_id": "123"}'
    """
    given = _settings().get("socket")
    emit_event(
        event_type,
        payload=payload,
        payload_file=payload_file,
        idempotency_key=idempotency_key,
        occurred_at=occurred_at,
        as_json=_json(as_json),
        socket_path=socket_path or (Path(given) if given else None),
    )


@app.command("emit-batch")
def emit_batch(
    source: Annotated[
        str | None,
        typer.Argument(metavar="[FILE | -]", help="JSON lines to read [default: - (stdin)]."),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Emit many events: one {"type", "payload", "idempotency_key"?, "occurred_at"?} per line.

    Every line is checked first; if any is bad nothing is stored, each bad line is named and
    the exit code is 1. Up to 100,000 events go in one request, stored in one transaction; a
    longer file is sent in several requests, each atomic on its own. --json: one
    {id, duplicate, jobs, cancelled, debounced} per event, in input order.

    Example: timeos emit-batch signups.jsonl --json | jq '.[].id'
    """
    from timeos.cli.batch import emit_batch as send
    from timeos.cli.batch import read_source_name

    results = send(read_source_name(source), _client(socket_path))
    if _json(as_json):
        _print_json(results)
        return
    duplicates = sum(1 for r in results if r["duplicate"])
    jobs = sum(len(r["jobs"]) for r in results)
    # Correlation's counts only when there are any: the line stays as it was otherwise.
    extra = "".join(
        f", {n} job(s) {word}"
        for word, n in (
            ("cancelled", sum(len(r.get("cancelled", ())) for r in results)),
            ("debounced", sum(len(r.get("debounced", ())) for r in results)),
        )
        if n
    )
    print(
        f"{len(results) - duplicates} event(s) stored, {duplicates} duplicate(s),"
        f" {jobs} job(s) created{extra}"
    )


# ---- events -----------------------------------------------------------------------------------


@events_app.command("list")
def events_list(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events received at or after this ISO 8601 instant."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Only events received before this ISO 8601 instant."),
    ] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """List events, newest first. Piped: tab-separated, one line per event. --since and
    --until bound when timeosd received them (received_at), not the client's occurred_at.

    Example: timeos events list --type user_signup --since 2026-12-01T00:00Z --limit 20
    """
    from timeos.timefmt import parse_instant

    for name, value in (("--since", since), ("--until", until)):
        if value is not None:
            parse_instant(value, name)  # a usage error (exit 2) before any request
    query = {
        "type": event_type,
        "since": since,
        "until": until,
        "limit": limit,
        "offset": offset,
    }
    reply = _client(socket_path).request("GET", "/v1/events", query=query)
    events, total = reply.body["events"], reply.total()
    if _json(as_json):
        _print_json(events)
    else:
        from timeos.cli.render import events_sheet

        _show_sheet(events_sheet(events, total, offset))
    if not events and offset == 0:
        from timeos.cli.output import hint

        hint(f"no events of type {event_type!r} are stored" if event_type else "no events yet")


@events_app.command("show")
def events_show(
    event_id: IdArg,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Show one event, the jobs it created with their statuses, its replays, and for every
    loaded event rule whether it matches now: matched, other_type, condition_false,
    condition_error or rule_disabled.

    Example: timeos events show 01JD3Z8W7T0000000000000000
    """
    event = _client(socket_path).call("GET", f"/v1/events/{segment(event_id)}")
    if _json(as_json):
        _print_json(event)
    else:
        from timeos.cli.render import event_panel

        _show_panel(event_panel(event))


@events_app.command("replay")
def events_replay(
    event_id: IdArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Create nothing; print the jobs it would create.")
    ] = False,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Re-evaluate a stored event against the current rules; new jobs link to the event.

    Jobs are planned from the event's occurred_at as the first time, so a job whose offset has
    passed is due now. The replay is recorded on the event (timeos events show lists it).
    --json: {event, replay, dry_run, jobs}.

    Example: timeos events replay 01JD3Z8W7T0000000000000000 --dry-run
    """
    result = _client(socket_path).call(
        "POST", f"/v1/events/{segment(event_id)}/replay", {"dry_run": dry_run}
    )
    if _json(as_json):
        _print_json(result)
        return
    from timeos.cli.render import replay_sheet

    jobs = result["jobs"]
    if dry_run:
        print(f"dry run: replaying {event_id} would create {len(jobs)} job(s)")
    else:
        number = result["replay"]["number"]
        print(f"replay #{number} of {event_id}: created {len(jobs)} job(s)")
    if jobs:
        _show_sheet(replay_sheet(jobs))


# ---- jobs -------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="pending|blocked|running|succeeded|retrying|dead|cancelled",
            autocompletion=_complete_status,
        ),
    ] = None,
    rule: RuleOpt = None,
    event: Annotated[
        str | None, typer.Option("--event", help="Only jobs of this event id.")
    ] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """List jobs. Tables without --status: running and waiting jobs first (next due first),
    then finished ones, newest first; with --status or --json: by perform_at.

    Example: timeos jobs list --status pending
    """
    query = {"status": status, "rule": rule, "event": event, "limit": limit, "offset": offset}
    if status is None and not _json(as_json):
        # For people: what is still to happen on top. --json keeps perform_at order (a contract
        # scripts, and tests, page through).
        query["order"] = "waiting_first"
    client = _client(socket_path)
    reply = client.request("GET", "/v1/jobs", query=query)
    jobs, total = reply.body["jobs"], reply.total()
    if _json(as_json):
        _print_json(jobs)
    else:
        from timeos.cli.render import jobs_sheet

        _show_sheet(jobs_sheet(jobs, "Jobs", total, offset))
    if not jobs and offset == 0:
        from timeos.cli.hints import empty_jobs
        from timeos.cli.output import hint

        hint(empty_jobs(client, status=status, rule=rule, event=event))


@jobs_app.command("show")
def jobs_show(
    job_id: IdArg,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Show one job with its attempt history, its chain (the jobs it waits for and the jobs
    waiting for it) and the tail of the last attempt's output.

    Example: timeos jobs show 01JD3Z8W7T0000000000000001
    """
    job = _client(socket_path).call("GET", f"/v1/jobs/{segment(job_id)}")
    if _json(as_json):
        _print_json(job)
    else:
        from timeos.cli.render import job_panel

        _show_panel(job_panel(job))


@jobs_app.command("output")
def jobs_output(
    job_id: IdArg,
    attempt: Annotated[
        int | None,
        typer.Option("--attempt", min=1, help="Which attempt [default: the last one]."),
    ] = None,
    stderr: Annotated[
        bool,
        typer.Option(
            "--stderr",
            help="Print the command's standard error instead of its output.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Print an attempt's captured output (or, with --stderr, standard error) exactly as stored.

    Example: timeos jobs output 01JD3Z8W7T0000000000000001 --attempt 2 > out.txt
    """
    job = _client(socket_path).call("GET", f"/v1/jobs/{segment(job_id)}")
    history = job.get("attempt_history", [])
    if not history:
        raise NotFound(f"job {job_id!r} has no attempts yet (status {job['status']})")
    numbers = [a["number"] for a in history]
    chosen = (
        history[-1]
        if attempt is None
        else next((a for a in history if a["number"] == attempt), None)
    )
    if chosen is None:
        raise NotFound(
            f"job {job_id!r} has no attempt {attempt} (it has {numbers[0]}..{numbers[-1]})"
        )
    stream = "stderr" if stderr else "output"
    output = chosen.get(stream)
    if _json(as_json):
        _print_json({"id": job["id"], "attempt": chosen["number"], stream: output})
        return
    if output is None:
        from timeos.cli.output import hint

        hint(f"attempt {chosen['number']} stored no {'standard error' if stderr else 'output'}")
        return
    if sys.stdout.isatty():
        from timeos.cli.table import visible

        output = visible(output, keep_newlines=True)  # a terminal obeys escapes; a file keeps them
    sys.stdout.write(output)


@jobs_app.command("cancel")
def jobs_cancel(
    job_ids: Annotated[
        list[str] | None, typer.Argument(metavar="ID...", callback=_not_empty)
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option(
            "--rule", help="Cancel every waiting job of this rule.", autocompletion=_complete_rule
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="With --rule: only pending, retrying, blocked (or running, with --kill).",
        ),
    ] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="With --rule: only jobs of this event id.")
    ] = None,
    kill: Annotated[
        bool,
        typer.Option(
            "--kill", help="With --rule: also stop its running jobs (recorded cancelled)."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --rule: do not ask.")] = False,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Cancel waiting jobs (pending, retrying or blocked), by id or every one of a rule; the
    blocked jobs of their chains are cancelled with them. With ids: exit 1 if any could not
    be cancelled. With --rule: asks first on a terminal (elsewhere pass
    --yes), prints how many were cancelled; --kill also stops running jobs (their process
    group) and records them cancelled, never retried.

    Example: timeos jobs cancel --rule welcome-email --status pending --yes
    """
    client = _client(socket_path)
    if rule is None:
        if not job_ids:
            raise UsageError("give job ids, or --rule NAME")
        if status or event or kill or yes:
            raise UsageError("--status, --event, --kill and --yes go with --rule, not with ids")
        _cancel_ids(client, job_ids, as_json)
        return
    if job_ids:
        raise UsageError("give job ids or --rule NAME, not both")
    from timeos.cli.batch import confirm

    what = f"rule {rule!r}" + (f", event {event}" if event else "")
    kinds = status or ("waiting and running" if kill else "waiting")
    confirm(f"cancel every {kinds} job of {what}", yes)
    result = client.call(
        "POST",
        "/v1/jobs/cancel-matching",
        {"rule": rule, "status": status, "event": event, "kill": kill},
    )
    if _json(as_json):
        _print_json(result)
        return
    line = f"{result['cancelled']} job(s) of {what} cancelled"
    if kill:
        line += f", {len(result['killed'])} running job(s) stopped"
    print(line)


def _cancel_ids(client: Client, job_ids: list[str], as_json: bool) -> None:
    results = []
    for start in range(0, len(job_ids), CANCEL_BATCH):  # the daemon takes 1000 ids per request
        batch = job_ids[start : start + CANCEL_BATCH]
        results += client.call("POST", "/v1/jobs/cancel", {"ids": batch})["results"]
    if _json(as_json):
        _print_json(results)
    else:
        for r in results:
            if r["cancelled"]:
                print(f"{r['id']}: cancelled")
            else:
                sys.stderr.write(f"Error: {r['id']}: {r['error']}\n")
    if not all(r["cancelled"] for r in results):
        raise typer.Exit(1)


# ---- dead letter queue ------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    rule: RuleOpt = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """List dead jobs with their last error.

    Example: timeos dlq list --rule premium-receipt
    """
    client = _client(socket_path)
    reply = client.request("GET", "/v1/dlq", query={"rule": rule, "limit": limit, "offset": offset})
    jobs, total = reply.body["jobs"], reply.total()
    if _json(as_json):
        _print_json(jobs)
    else:
        from timeos.cli.render import jobs_sheet

        _show_sheet(jobs_sheet(jobs, "Dead letter queue", total, offset))
    if not jobs and offset == 0:
        from timeos.cli.hints import unknown_rule
        from timeos.cli.output import hint

        unknown = unknown_rule(client, rule) if rule else None
        hint(f"no dead jobs: {unknown}" if unknown else "no dead jobs")


DlqIds = Annotated[list[str] | None, typer.Argument(metavar="ID...", callback=_not_empty)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead job (of --rule).")]
DlqRuleOpt = Annotated[
    str | None,
    typer.Option("--rule", help="With --all: only this rule's.", autocompletion=_complete_rule),
]


def _dlq_bulk(
    verb: str, job_ids: list[str] | None, every: bool, rule: str | None, client: Client
) -> list[dict[str, Any]] | None:
    """Several ids or --all go through POST /v1/dlq/{verb}; None: one id, the old route."""
    if every and job_ids:
        raise UsageError("give job ids or --all, not both")
    if not every and not job_ids:
        raise UsageError("give job ids, or --all [--rule NAME]")
    if rule is not None and not every:
        raise UsageError("--rule goes with --all")
    if job_ids and len(job_ids) == 1:
        return None
    if every:
        body: dict[str, Any] = {"all": True, "rule": rule}
        return list(client.call("POST", f"/v1/dlq/{verb}", body)["results"])
    results: list[dict[str, Any]] = []
    assert job_ids is not None
    for start in range(0, len(job_ids), CANCEL_BATCH):
        part = job_ids[start : start + CANCEL_BATCH]
        results += client.call("POST", f"/v1/dlq/{verb}", {"ids": part})["results"]
    return results


def _bulk_report(results: list[dict[str, Any]], done: str, as_json: bool) -> None:
    if _json(as_json):
        _print_json(results)
    else:
        for r in results:
            if r["ok"]:
                print(f"{r['id']}: {done}")
            else:
                sys.stderr.write(f"Error: {r['id']}: {r['error']}\n")
        print(f"{sum(1 for r in results if r['ok'])} job(s) {done}")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@dlq_app.command("retry")
def dlq_retry(
    job_ids: DlqIds = None,
    every: AllOpt = False,
    rule: DlqRuleOpt = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Send dead jobs back to pending, due now, with a fresh attempt budget: the ids, or --all
    (of --rule). One id: prints the job (--json: the job); several or --all: one line per job
    and the count (--json: [{id, ok, error}]); exit 1 if any could not be retried.

    Example: timeos dlq retry --all --rule premium-receipt
    """
    client = _client(socket_path)
    results = _dlq_bulk("retry", job_ids, every, rule, client)
    if results is not None:
        _bulk_report(results, "pending", as_json)
        return
    assert job_ids is not None
    job = client.call("POST", f"/v1/dlq/{segment(job_ids[0])}/retry")
    if _json(as_json):
        _print_json(job)
    else:
        print(f"{job['id']}: {job['status']} (attempts {job['attempts']} of {job['max_attempts']})")


@dlq_app.command("delete")
def dlq_delete(
    job_ids: DlqIds = None,
    every: AllOpt = False,
    rule: DlqRuleOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="With --all: do not ask.")] = False,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Delete dead jobs and their history for good: the ids, or --all (of --rule), which asks
    first on a terminal (elsewhere pass --yes). Several ids or --all: --json is
    [{id, ok, error}]; exit 1 if any could not be deleted.

    Example: timeos dlq delete --all --rule premium-receipt --yes
    """
    client = _client(socket_path)
    if every and not job_ids:
        from timeos.cli.batch import confirm

        what = f" of rule {rule!r}" if rule else ""
        confirm(f"delete every dead job{what} for good", yes)
    elif yes:
        raise UsageError("--yes goes with --all")
    results = _dlq_bulk("delete", job_ids, every, rule, client)
    if results is not None:
        _bulk_report(results, "deleted", as_json)
        return
    assert job_ids is not None
    result = client.call("DELETE", f"/v1/dlq/{segment(job_ids[0])}")
    if _json(as_json):
        _print_json(result)
    else:
        print(f"{result['id']}: deleted")


# ---- rules ------------------------------------------------------------------------------------


@rules_app.command("list")
def rules_list(as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """List the daemon's loaded rules, with each time-based rule's next fire time.

    Example: timeos rules list
    """
    rules = _client(socket_path).call("GET", "/v1/rules")["rules"]
    if _json(as_json):
        _print_json(rules)
    else:
        from timeos.cli.render import rules_sheet

        _show_sheet(rules_sheet(rules))
    if not rules:
        from timeos.cli.output import hint

        hint("no rules are loaded")


@rules_app.command("show")
def rules_show(name: RuleArg, as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Show one loaded rule.

    Example: timeos rules show welcome-email
    """
    rule = _client(socket_path).call("GET", f"/v1/rules/{segment(name)}")
    if _json(as_json):
        _print_json(rule)
    else:
        from timeos.cli.render import rule_panel

        _show_panel(rule_panel(rule))


@rules_app.command("history")
def rules_history(
    name: RuleArg,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Show a time-based rule's occurrences: fired, skipped or missed, with the reason.

    Example: timeos rules history weekly-report
    """
    reply = _client(socket_path).request(
        "GET", f"/v1/rules/{segment(name)}/history", query={"limit": limit, "offset": offset}
    )
    occurrences = reply.body["occurrences"]
    if _json(as_json):
        _print_json(occurrences)
    else:
        from timeos.cli.render import history_sheet

        _show_sheet(history_sheet(name, occurrences, reply.total(), offset))
    if not occurrences and offset == 0:
        from timeos.cli.output import hint

        hint(f"rule {name!r} has no recorded occurrences yet")


@rules_app.command("disable")
def rules_disable(
    name: RuleArg,
    duration: Annotated[
        str | None,
        typer.Option(
            "--for",
            metavar="DURATION",
            help="Enable it again after this long (30m, 2h, 1d); default: until enabled.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Disable a rule: it matches no events and fires no occurrences until enabled.

    Kept across restarts and reloads. Jobs it already created still run. When it comes back, a
    time-based rule's on_missed decides what runs late; the rest are skipped "rule disabled".

    Example: timeos rules disable nightly-backup --for 2h
    """
    body: dict[str, Any] = {}
    if duration is not None:
        from timeos.timefmt import parse_duration

        parse_duration(duration, "--for")  # a usage error here, before the daemon is asked
        body["for"] = duration
    rule = _client(socket_path).call("POST", f"/v1/rules/{segment(name)}/disable", body)
    if _json(as_json):
        _print_json(rule)
    else:
        until = rule.get("disabled_until")
        print(f"{rule['name']}: disabled " + (f"until {until}" if until else "until enabled"))


@rules_app.command("enable")
def rules_enable(name: RuleArg, as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Enable a rule disabled with `rules disable` (or by its file's enabled: false).

    Example: timeos rules enable nightly-backup
    """
    rule = _client(socket_path).call("POST", f"/v1/rules/{segment(name)}/enable")
    if _json(as_json):
        _print_json(rule)
    else:
        print(f"{rule['name']}: enabled")


@rules_app.command("set")
def rules_set(
    name: RuleArg,
    priority: Annotated[
        int | None,
        typer.Option("--priority", metavar="N", help="Priority of its new jobs (higher first)."),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(
            "--rate-limit",
            metavar="SPEC",
            help="COUNT/UNIT, unit second, minute, hour or day; burst one unit's worth.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", metavar="N", min=1, help="At most N of its jobs running at once."
        ),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Override a rule's values from its file, kept across restarts and reloads.

    In force at once: a rate limit or concurrency holds its jobs back (delayed, never dropped).
    `rules show` says which value is in force and where it came from; `rules reset` undoes it.

    Example: timeos rules set nightly-backup --priority 10 --rate-limit 10/minute
    """
    body: dict[str, Any] = {}
    if priority is not None:
        body["priority"] = priority
    if rate_limit is not None:
        from timeos.rules.overrides import parse_rate_limit

        body["rate_limit"] = parse_rate_limit(rate_limit)
    if concurrency is not None:
        body["concurrency"] = concurrency
    if not body:
        raise UsageError("give at least one of --priority, --rate-limit, --concurrency")
    rule = _client(socket_path).call("POST", f"/v1/rules/{segment(name)}/overrides", body)
    if _json(as_json):
        _print_json(rule)
        return
    values = rule["overrides"]
    for key in body:
        value = values[key]
        note = f" ({value['note']})" if value.get("note") else ""
        print(f"{rule['name']}: {key.replace('_', '-')} {value['value']}{note}")


@rules_app.command("reset")
def rules_reset(name: RuleArg, as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Drop a rule's runtime overrides and any runtime disable: its file's values again.

    Example: timeos rules reset nightly-backup
    """
    rule = _client(socket_path).call("DELETE", f"/v1/rules/{segment(name)}/overrides")
    if _json(as_json):
        _print_json(rule)
    else:
        state = "enabled" if rule["enabled"] else "disabled"
        print(f"{rule['name']}: the file's values ({state}, priority {rule['priority']})")


@rules_app.command("run")
def rules_run(
    name: RuleArg,
    payload: Annotated[
        str | None, typer.Option("--payload", help="JSON object for the job, or - for stdin.")
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Run a rule now: create a job for its action at once, recorded as a manual run.

    Time-based rules keep their schedule; the run shows in `rules history` as fired, reason
    "manual run". Event rules get a job with the payload and no event. Prints the job id.

    Example: timeos rules run nightly-backup
    """
    body: dict[str, Any] = {}
    if payload is not None:
        from timeos.cli.emit import payload_cap, read_payload

        body["payload"] = read_payload(payload, None, payload_cap(os.environ))
    job = _client(socket_path).call("POST", f"/v1/rules/{segment(name)}/run", body)
    if _json(as_json):
        _print_json(job)
    else:
        print(job["id"])


@rules_app.command("check")
def rules_check(
    rule_paths: Annotated[list[Path], typer.Argument(metavar="PATH...")],
    as_json: JsonOpt = False,
    socket_path: Annotated[
        Path | None, typer.Option("--socket", help="Accepted for uniformity; not used (offline).")
    ] = None,
) -> None:
    """Validate rule files offline, exactly as timeosd would (imports python actions too).

    Exit 0 when valid; exit 1 with every problem on stderr as file:line:col: message.
    Warnings (e.g. a command that is missing or not executable) go to stderr and keep exit 0.

    Example: timeos rules check rules.yaml
    """
    from timeos.rules.loader import load_rules

    ruleset = load_rules(rule_paths, os.environ)
    _warn([str(w) for w in ruleset.warnings])
    if _json(as_json):
        _print_json({"valid": True, "rules": len(ruleset.rules), "actions": len(ruleset.actions)})
    else:
        print(f"ok: {len(ruleset.rules)} rule(s), {len(ruleset.actions)} action(s)")


# ---- daemon -----------------------------------------------------------------------------------


@app.command()
def reload(as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Reload the daemon's rule files; if they are invalid the old rules stay (exit 1).

    Example: timeos reload
    """
    result = _client(socket_path).call("POST", "/v1/reload")
    _warn(result.get("warnings", []))
    if _json(as_json):
        _print_json(result)
    else:
        print(f"reloaded: {result['rules']} rule(s)")


@app.command()
def status(as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Show whether timeosd is up, its version, uptime, socket, database and rule files.

    Example: timeos status
    """
    result = _client(socket_path).call("GET", "/v1/status")
    if _json(as_json):
        _print_json(result)
    else:
        from timeos.cli.render import status_panel

        _show_panel(status_panel(result))


HEALTH_EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@app.command()
def health(as_json: JsonOpt = False, socket_path: SocketOpt = None) -> None:
    """Show overall health (healthy|degraded|unhealthy), each component and job counts.

    Exit 0 healthy, 1 degraded, 2 unhealthy, 3 daemon not reachable: fit for a monitor.

    Example: timeos health --json || alert "timeosd: $?"
    """
    result = _client(socket_path).request("GET", "/v1/health", accept=(503,)).body
    if _json(as_json):
        _print_json(result)
    else:
        from timeos.cli.render import health_panel

        _show_panel(health_panel(result))
    code = HEALTH_EXIT.get(result.get("status"), 2)
    if code:
        raise typer.Exit(code)


@app.command()
def cleanup(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Remove what is older than this (30d, 12h) instead of the daemon's retention.",
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            metavar="S",
            help="Only jobs in this state: succeeded, cancelled or dead (repeatable).",
            autocompletion=lambda incomplete: [
                s for s in ("succeeded", "cancelled", "dead") if s.startswith(incomplete)
            ],
        ),
    ] = None,
    events: Annotated[
        bool, typer.Option("--events", help="Events too (alone: only events).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; remove nothing.")
    ] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum",
            help="Then VACUUM to shrink the file (writes wait for it; can take a while).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Remove finished jobs (with attempts and occurrences) and events older than retention.

    Without --status or --events: succeeded and cancelled jobs, and events. Never removes
    waiting or running jobs, an event one of them needs, or a dead job with a waiting
    on_failure job. Dead jobs go only with --status dead --older-than.

    Example: timeos cleanup --older-than 7d --status succeeded --dry-run
    """
    if older_than is not None:
        from timeos.timefmt import parse_duration

        parse_duration(older_than, "--older-than")  # a usage error here, before the daemon
    body: dict[str, Any] = {
        "statuses": status or [],
        "events": events,
        "dry_run": dry_run,
        "vacuum": vacuum,
    }
    if older_than is not None:
        body["older_than"] = older_than
    result = _client(socket_path).call("POST", "/v1/cleanup", body)
    if _json(as_json):
        _print_json(result)
    else:
        from timeos.cli.render import cleanup_sheet

        _show_sheet(cleanup_sheet(result))


@app.command()
def watch(
    rule: Annotated[
        str | None,
        typer.Option("--rule", help="Only events of this rule.", autocompletion=_complete_rule),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="Only this lifecycle kind (job.dead), or kinds with this prefix (job.).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Stream lifecycle events as they happen, one line each, until Ctrl-C (exit 0).

    Kinds: event.emitted rule.matched job.created job.started job.succeeded job.failed
    job.retrying job.dead job.cancelled occurrence.fired occurrence.skipped occurrence.missed;
    watch.dropped says how many events this watcher lost by reading too slowly.
    With --json, one JSON object per line: kind, at, event_id, job_id, rule, and the rest.

    Example: timeos watch --type job. --rule welcome-email --json
    """
    client = _client(socket_path)
    machine = _json(as_json)
    view = None if machine else _view()
    try:
        for _, data in client.stream("/v1/watch", {"rule": rule, "type": kind}):
            event = json.loads(data)
            if machine:
                line = json.dumps(event, ensure_ascii=False)
            else:
                from timeos.cli.render import watch_line

                line = watch_line(event, view)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:  # `timeos watch | head -3`: the reader has what it wanted
        sys.stderr.close()
        os._exit(0)
    from timeos.cli.output import hint

    hint("timeosd ended the stream (it is shutting down)")


@app.command("next")
def next_fires(
    rule: Annotated[
        str | None,
        typer.Argument(
            metavar="RULE",
            help="A rule's name.",
            autocompletion=_complete_rule,
            callback=_not_empty,
        ),
    ] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="A cron expression.")] = None,
    tz: Annotated[
        str, typer.Option("--tz", help="IANA zone for --cron; 'local' is this system's zone.")
    ] = "UTC",
    after: Annotated[
        str | None, typer.Option("--after", help="ISO 8601 instant [default: now].")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=1000, help="How many.")] = 5,
    rules_path: Annotated[
        list[Path] | None,
        typer.Option("--rules", help="Read RULE from these files instead of the daemon."),
    ] = None,
    as_json: JsonOpt = False,
    socket_path: SocketOpt = None,
) -> None:
    """Preview the next fire times of a cron expression or a rule (offline with --cron/--rules).

    The first column is in the rule's zone, named in its header; the next in yours.

    Example: timeos next --cron "30 2 * * *" --tz America/New_York --count 3
    """
    from timeos.cli.preview import preview

    fires, now = preview(
        rule=rule,
        cron=cron,
        tz=tz,
        after=after,
        count=count,
        rules_path=rules_path,
        client=_client(socket_path),
        environ=os.environ,
    )
    if _json(as_json):
        _print_json([f["at_local"] for f in fires])
    else:
        from timeos.cli.output import view_label
        from timeos.cli.render import fires_sheet

        view = _view()
        from timeos.cli.output import print_sheet

        print_sheet(fires_sheet(fires, now, view_label(view), view.zone), view)


def _version(value: bool) -> None:
    if value:
        print(f"timeos {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    socket_path: Annotated[
        Path | None,
        typer.Option("--socket", help="timeosd's Unix socket, for every command after."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    utc: Annotated[bool, typer.Option("--utc", help=DISPLAY_OPTIONS["utc"])] = False,
    wide: Annotated[bool, typer.Option("--wide", help=DISPLAY_OPTIONS["wide"])] = False,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help=DISPLAY_OPTIONS["no_headers"])
    ] = False,
) -> None:
    """Talk to timeosd: emit events, inspect and cancel jobs, manage dead letters and rules.

    Options before the command apply to it (timeos --socket S --json jobs list). Into a pipe,
    tables are tab-separated with a header line; times are in your zone with the offset.

    Example: timeos --json jobs list --status dead
    """
    given = _settings(ctx)
    for name, value in (
        ("socket", socket_path),
        ("json", as_json),
        ("utc", utc),
        ("wide", wide),
        ("no_headers", no_headers),
    ):
        if value:
            given[name] = value


def command() -> Any:
    """The click command tree, with the display options added to every command that prints."""
    root = typer.main.get_command(app)

    def walk(cmd: Any) -> None:
        if isinstance(cmd, TyperGroup):
            for sub in cmd.commands.values():
                walk(sub)
            return
        if cmd.name in NO_DISPLAY:
            return
        for name, text in DISPLAY_OPTIONS.items():
            flag = "--" + name.replace("_", "-")
            cmd.params.append(
                TyperOption(
                    param_decls=[flag, name],
                    is_flag=True,
                    default=False,
                    expose_value=False,
                    callback=_remember,
                    help=text,
                )
            )

    walk(root)
    return root


def main() -> None:
    """Console-script entry point: run the app; TimeOSError becomes `Error: ...` + exit code.

    With --json anywhere on the command line, errors are the API's {"error": {code, message}}
    object on stderr instead (exit codes unchanged).
    """
    as_json = "--json" in sys.argv[1:]
    try:
        code = command().main(standalone_mode=False, prog_name="timeos")
    except TimeOSError as err:
        fail(err, as_json)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: click's message and exit code 2
        exit_code = getattr(exc, "exit_code", 2)
        if as_json and hasattr(exc, "format_message"):
            fail(UsageError(exc.format_message()), True, exit_code)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)
