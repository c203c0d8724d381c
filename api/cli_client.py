"""`switchyard batch …` and `switchyard chat`: the batch user's commands, an HTTP client of a running API.

They speak OpenAI's protocol through the `openai` SDK with its `base_url`
swapped (Files, Batch and Chat Completions APIs), so they hold no knowledge of
the server beyond those shapes and our one extension, a batch's
`callback_url`. Connection options come from flags or, through typer, from
`SWITCHYARD_BASE_URL` / `OPENAI_BASE_URL` and `SWITCHYARD_API_KEY` /
`OPENAI_API_KEY`.

Output: what a script wants (a batch id, the summary, a completion's text)
goes to stdout; progress and errors go to stderr. An API error is one line,
`error: <code>: <message>`, and exit code 1.
"""

from __future__ import annotations

import io
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types import Batch, FileObject

#: Batch statuses after which nothing changes any more.
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: Uploads at least this big get a progress bar.
UPLOAD_PROGRESS_BYTES = 1 << 20
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

BaseUrl = Annotated[str, typer.Option(
    "--base-url", envvar=["SWITCHYARD_BASE_URL", "OPENAI_BASE_URL"], show_envvar=True,
    help="The Switchyard API, with or without /v1.", rich_help_panel="Connection")]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", envvar=["SWITCHYARD_API_KEY", "OPENAI_API_KEY"], show_envvar=True, show_default=False,
    help="An sk-sy-… API key.", rich_help_panel="Connection")]
Poll = Annotated[float, typer.Option("--poll", min=0.1, help="Seconds between status checks while waiting.")]
Wait = Annotated[bool, typer.Option("--wait", help="Watch until the batch ends, then download its files.")]

batch_app = typer.Typer(help="Submit, watch, list, cancel and download batches (OpenAI's Batch API).",
                        no_args_is_help=True)


# --- connection and errors


def api_base(url: str) -> str:
    """The SDK's base URL for an API given with or without `/v1`: `http://host:8000` → `http://host:8000/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def _client(base_url: str, api_key: str | None) -> OpenAI:
    from openai import OpenAI

    if not api_key:
        _fail("no API key: pass --api-key or set SWITCHYARD_API_KEY")
    return OpenAI(base_url=api_base(base_url), api_key=api_key)


def _fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def _api_errors(client: OpenAI) -> Iterator[None]:
    """Turn the SDK's exceptions into one line on stderr and exit code 1."""
    import openai

    try:
        yield
    except openai.APIConnectionError as exc:  # timeouts included
        _fail(f"error: cannot reach the API at {client.base_url}: {exc.message}")
    except openai.APIError as exc:
        # The body is OpenAI's `error` object, or our problem+json on native routes.
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or body.get("detail") or exc.message
        status = getattr(exc, "status_code", None)
        _fail(f"error: {exc.code or status or 'api_error'}: {message}")


# --- chat


def chat(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: Annotated[str, typer.Option("--model", "-m", help="A model name from GET /v1/models.")],
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Output token limit.")] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Stream one chat completion to the terminal as it is generated."""
    from openai import omit

    client = _client(base_url, api_key)
    messages: list[Any] = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": prompt})
    with _api_errors(client):
        stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                                max_tokens=max_tokens if max_tokens is not None else omit)
        started = False
        try:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        sys.stdout.write(choice.delta.content)
                        sys.stdout.flush()
                        started = True
        except BaseException:
            if started:  # end the partial text before the error line
                sys.stdout.write("\n")
            raise
    sys.stdout.write("\n")


# --- batch submit


@batch_app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="JSONL, one request per line: custom_id, method, url, body.")],
    endpoint: Annotated[str, typer.Option(help="The endpoint every line calls.")] = "/v1/chat/completions",
    window: Annotated[str, typer.Option(help="The completion window.")] = "24h",
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    callback_url: Annotated[str | None, typer.Option(help="POSTed a signed webhook when the batch ends.")] = None,
    wait: Wait = False,
    output_dir: Annotated[Path | None, typer.Option(
        file_okay=False, help="Where --wait writes the files (default: next to FILE).")] = None,
    poll: Poll = 2.0,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Upload FILE and create a batch of its requests; print the batch id."""
    from openai import omit

    tags = _parse_metadata(metadata or [])
    client = _client(base_url, api_key)
    with _api_errors(client):
        uploaded = _upload(client, file)
        # The SDK types `endpoint` and `completion_window` as OpenAI's current values; the server decides.
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint=cast(Any, endpoint), completion_window=cast(Any, window),
            metadata=tags or omit, extra_body={"callback_url": callback_url} if callback_url else None,
        )
    out.print(batch.id)
    if wait:
        _finish(client, batch, output_dir or file.parent, poll)


def _parse_metadata(pairs: list[str]) -> dict[str, str]:
    """`["team=ml", "run=7"]` → `{"team": "ml", "run": "7"}`."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        tags[key] = value
    return tags


class _ReadProgress(io.RawIOBase):
    """A binary file that reports its read position: the SDK streams a multipart body in chunks."""

    def __init__(self, raw: io.BufferedReader, on_read: Callable[[int], None]) -> None:
        self._raw, self._on_read = raw, on_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        self._on_read(self._raw.tell())
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # A retried request rewinds the file; the bar follows.
        position = self._raw.seek(offset, whence)
        self._on_read(position)
        return position

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:  # the length for Content-Length, without reading
        return self._raw.fileno()


def _upload(client: OpenAI, path: Path) -> FileObject:
    """Upload `path` with purpose `batch`, streamed; a progress bar on stderr when it is big."""
    size = path.stat().st_size
    with path.open("rb") as raw:
        if size < UPLOAD_PROGRESS_BYTES:
            return client.files.create(file=(path.name, raw, "application/jsonl"), purpose="batch")
        columns = (TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task(escape(path.name), total=size)
            reader = io.BufferedReader(_ReadProgress(raw, lambda position: progress.update(task, completed=position)))
            return client.files.create(file=(path.name, reader, "application/jsonl"), purpose="batch")


# --- watching and collecting a batch


class _RateColumn(ProgressColumn):
    """Requests finished per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} req/s" if speed else "– req/s", style="progress.data.speed")


def _counts(batch: Batch) -> tuple[int, int, int]:
    """(total, completed, failed) requests."""
    counts = batch.request_counts
    return (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)


def _describe(batch: Batch) -> str:
    """The progress bar's label: the status and any failures (the id is printed above it)."""
    _, _, failed = _counts(batch)
    failures = f" · [red]{failed} failed[/]" if failed else ""
    return f"[bold]{batch.status}[/]{failures}"


def _watch(client: OpenAI, batch: Batch, poll: float) -> Batch:
    """Poll the batch until it is terminal, with a live progress bar on stderr."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    seen: tuple[str, int, int, int] | None = None
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        total, completed, failed = _counts(batch)
        # Starting from the counts so far, so a resumed watch does not count them into the rate.
        task = progress.add_task(_describe(batch), total=total or None, completed=completed + failed)
        while True:
            if not err.is_terminal and seen != (now := (batch.status, total, completed, failed)):
                # No live bar in a log: one line per change instead.
                err.print(f"{batch.id} {batch.status}: {completed + failed}/{total} done, {failed} failed")
                seen = now
            if batch.status in TERMINAL_STATUSES:
                return batch
            time.sleep(poll)
            batch = client.batches.retrieve(batch.id)
            total, completed, failed = _counts(batch)
            progress.update(task, description=_describe(batch), total=total or None, completed=completed + failed)


def _finish(client: OpenAI, batch: Batch, output_dir: Path, poll: float) -> NoReturn:
    """Watch, download, summarize; exit 0 if the batch completed, 1 otherwise."""
    try:
        with _api_errors(client):
            batch = _watch(client, batch, poll)
            written = _download_all(client, batch, output_dir)
    except KeyboardInterrupt:
        resume = f"switchyard batch status {batch.id} --wait --output-dir {shlex.quote(str(output_dir))}"
        err.print(f"\nStopped watching; batch {batch.id} keeps running on the server. Resume with:\n  {resume}",
                  soft_wrap=True, markup=False)
        raise typer.Exit(INTERRUPTED) from None
    _summary(batch, written)
    raise typer.Exit(0 if batch.status == "completed" else 1)


def _download(client: OpenAI, file_id: str, path: Path) -> int:
    """Stream a file's content to `path` (via a `.part` file, so a path that exists is complete); its lines."""
    partial = path.with_name(path.name + ".part")
    lines = 0
    try:
        with client.files.with_streaming_response.content(file_id) as response, partial.open("wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
                lines += chunk.count(b"\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return lines


def _download_all(client: OpenAI, batch: Batch, output_dir: Path) -> list[tuple[Path, int]]:
    """Download the batch's output and error files as `<id>_output.jsonl` / `<id>_errors.jsonl`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_id, suffix in ((batch.output_file_id, "output"), (batch.error_file_id, "errors")):
        if file_id:
            path = output_dir / f"{batch.id}_{suffix}.jsonl"
            written.append((path, _download(client, file_id, path)))
    return written


def _summary(batch: Batch, written: list[tuple[Path, int]]) -> None:
    """The outcome of a finished batch on stdout; a failed validation's errors on stderr."""
    total, completed, failed = _counts(batch)
    table = Table(show_header=False)
    table.add_row("batch", batch.id)
    table.add_row("status", f"[{'green' if batch.status == 'completed' else 'red'}]{batch.status}[/]")
    table.add_row("requests", str(total))
    table.add_row("completed", str(completed))
    table.add_row("failed", f"[red]{failed}[/]" if failed else "0")
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    if ended:
        table.add_row("took", _duration(ended - batch.created_at))
    _print_table(table)
    for path, lines in written:
        out.print(f"wrote {path} ({lines} lines)", soft_wrap=True)
    for error in (batch.errors.data or []) if batch.errors else []:
        where = f"line {error.line}: " if error.line is not None else ""
        param = f" ({error.param})" if error.param else ""
        err.print(f"{where}{error.code}: {error.message}{param}", soft_wrap=True, markup=False)


# --- the other batch commands


BatchId = Annotated[str, typer.Argument(help="A batch id (batch_…).", show_default=False)]


@batch_app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """List your batches, newest first."""
    client = _client(base_url, api_key)
    with _api_errors(client):
        page = client.batches.list(limit=limit)
    table = Table("id", "status", "endpoint", "done", "failed", "created")
    for batch in page.data:
        total, completed, failed = _counts(batch)
        table.add_row(batch.id, batch.status, batch.endpoint, f"{completed + failed}/{total}", str(failed),
                      _when(batch.created_at))
    _print_table(table)


@batch_app.command()
def status(
    batch_id: BatchId,
    wait: Wait = False,
    output_dir: Annotated[Path | None, typer.Option(
        file_okay=False, help="Where --wait writes the files (default: the current directory).")] = None,
    poll: Poll = 2.0,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a batch; with --wait, watch it to the end and download its files (as `submit --wait`)."""
    client = _client(base_url, api_key)
    with _api_errors(client):
        batch = client.batches.retrieve(batch_id)
    if wait:
        _finish(client, batch, output_dir or Path.cwd(), poll)
    total, completed, failed = _counts(batch)
    table = Table(show_header=False)
    table.add_row("batch", batch.id)
    table.add_row("status", batch.status)
    table.add_row("endpoint", batch.endpoint)
    table.add_row("requests", f"{completed + failed}/{total} done, {failed} failed")
    for name in ("input_file_id", "output_file_id", "error_file_id"):
        if value := getattr(batch, name):
            table.add_row(name.removesuffix("_id").replace("_", " "), value)
    for name in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expires_at",
                 "expired_at", "cancelling_at", "cancelled_at"):
        if value := getattr(batch, name):
            table.add_row(name.removesuffix("_at").replace("_", " "), _when(value))
    for key, value in (batch.metadata or {}).items():
        table.add_row(f"metadata.{key}", value)
    _print_table(table)
    for error in (batch.errors.data or []) if batch.errors else []:
        err.print(f"line {error.line}: {error.code}: {error.message}", soft_wrap=True, markup=False)


@batch_app.command()
def cancel(batch_id: BatchId, base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = None) -> None:
    """Cancel a batch: it goes `cancelling`, then `cancelled` with the results finished so far."""
    client = _client(base_url, api_key)
    with _api_errors(client):
        batch = client.batches.cancel(batch_id)
    out.print(f"{batch.id} {batch.status}")


@batch_app.command()
def download(
    batch_id: BatchId,
    output_dir: Annotated[Path | None, typer.Option(
        file_okay=False, help="Where to write the files (default: the current directory).")] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Download a batch's output and error files as `<id>_output.jsonl` / `<id>_errors.jsonl`."""
    client = _client(base_url, api_key)
    with _api_errors(client):
        batch = client.batches.retrieve(batch_id)
        if not (batch.output_file_id or batch.error_file_id):
            _fail(f"batch {batch.id} has no files yet (status {batch.status})")
        written = _download_all(client, batch, output_dir or Path.cwd())
    for path, lines in written:
        out.print(f"wrote {path} ({lines} lines)", soft_wrap=True)


def _when(timestamp: int) -> str:
    """A Unix time in local time, to the second."""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: int) -> str:
    """`75` → `1 min 15 s`."""
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _print_table(table: Table) -> None:
    """A table on stdout; in a pipe or file, which has no width to fit, at its natural width (ids whole)."""
    if out.is_terminal:
        out.print(table)
        return
    width = out.measure(table, options=out.options.update_width(10_000)).maximum
    Console(file=out.file, width=max(width, out.width), highlight=False).print(table)
