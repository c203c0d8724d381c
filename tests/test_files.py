"""The Files API through the unchanged `openai` SDK and raw multipart, and every `FileStorage` backend."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import psycopg
import pytest

from jobs import files
from jobs.clients import Clients
from jobs.errors import FileNotFound, FileTooLarge, InvalidUpload
from jobs.settings import Settings
from jobs.storage import CHUNK_BYTES, FileStorage, LocalStorage, ObjectStorage, storage_from
from scripts.embedded import free_port
from scripts.procs import Process, start_api
from tests.conftest import Stack, User

MiB = 1024 * 1024
BOUNDARY = "sy-test-7f3a9c"


def sdk(url: str, user: User) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=user.key, max_retries=0)


@pytest.fixture
async def files_of(stack: Stack, user: User, other_user: User) -> AsyncIterator[None]:
    """Deletes what a test left in the session API's storage (tables are truncated, stored bytes are not)."""
    yield
    for who in (user, other_user):
        client = sdk(stack.api_url, who)
        async for f in client.files.list():
            await client.files.delete(f.id)


def part_head(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    kind = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode()


async def multipart(*parts: tuple[str, str | None, bytes | AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """A multipart/form-data body, streamed (sent chunked: no Content-Length)."""
    for name, filename, data in parts:
        yield part_head(name, filename)
        if isinstance(data, bytes):
            yield data
        else:
            async for chunk in data:
                yield chunk
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@dataclass
class Generated:
    """Pseudo-random bytes made chunk by chunk, hashed as they are made."""

    size: int
    seed: int = 7

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        rng, left = random.Random(self.seed), self.size
        while left:
            chunk = rng.randbytes(min(left, MiB))
            self.digest.update(chunk)
            left -= len(chunk)
            yield chunk


def vm(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` memory figure (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM), where the kernel lets us."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- The SDK against the session's stack ------------------------------------------------------------------------


async def test_sdk_upload_retrieve_download_delete(stack: Stack, user: User, tmp_path: Path, files_of: None) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(b'{"custom_id": "r%d", "method": "POST"}\n' % i for i in range(2000)))
    client = sdk(stack.api_url, user)
    with path.open("rb") as f:
        created = await client.files.create(file=f, purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == path.stat().st_size and created.filename == "requests.jsonl"
    assert created.purpose == "batch" and created.status == "processed"
    assert (created.model_extra or {})["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    retrieved = await client.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    content = await client.files.content(created.id)
    assert content.content == path.read_bytes()
    assert content.response.headers["content-type"] == "application/octet-stream"
    assert content.response.headers["content-length"] == str(created.bytes)
    assert 'filename="requests.jsonl"' in content.response.headers["content-disposition"]

    deleted = await client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as gone:
            await call(created.id)
        assert gone.value.code == "file_not_found"


async def test_list_filters_by_purpose_and_pages_with_after(stack: Stack, user: User, files_of: None) -> None:
    client = sdk(stack.api_url, user)
    made = []
    for i, purpose in enumerate(["batch", "user_data", "batch", "assistants", "batch"]):
        made.append(await client.files.create(file=(f"f{i}.txt", b"x" * (i + 1)), purpose=purpose))  # type: ignore[arg-type]
    newest_first = [f.id for f in reversed(made)]

    page = await client.files.list()
    assert [f.id for f in page.data] == newest_first and page.has_more is False
    batch = await client.files.list(purpose="batch")
    assert [f.id for f in batch.data] == [made[4].id, made[2].id, made[0].id]

    first = await client.files.list(limit=2)
    assert [f.id for f in first.data] == newest_first[:2] and first.has_more is True
    second = await client.files.list(limit=2, after=first.data[-1].id)
    assert [f.id for f in second.data] == newest_first[2:4] and second.has_more is True
    assert [f.id async for f in client.files.list(limit=2)] == newest_first  # the SDK's auto-pagination
    oldest = await client.files.list(order="asc", limit=3)
    assert [f.id for f in oldest.data] == [f.id for f in made[:3]]

    raw = (await client.get("/files", cast_to=httpx.Response, options={"params": {"limit": 2}})).json()
    assert raw["object"] == "list" and raw["first_id"] == newest_first[0] and raw["last_id"] == newest_first[1]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.files.list(limit=0)
    assert bad.value.code == "validation_error"


async def test_another_users_file_is_not_found(stack: Stack, user: User, other_user: User, files_of: None) -> None:
    mine = await sdk(stack.api_url, user).files.create(file=("secret.txt", b"mine"), purpose="user_data")
    stranger = sdk(stack.api_url, other_user)
    for call in (stranger.files.retrieve, stranger.files.content, stranger.files.delete):
        with pytest.raises(openai.NotFoundError) as hidden:
            await call(mine.id)
        assert hidden.value.code == "file_not_found"
    assert (await stranger.files.list()).data == []
    assert (await sdk(stack.api_url, user).files.retrieve(mine.id)).id == mine.id


async def test_bad_uploads_are_invalid_upload(stack: Stack, user: User, client: httpx.AsyncClient,
                                              files_of: None) -> None:
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        await sdk(stack.api_url, user).files.create(file=("a.txt", b"a"), purpose="fine-tune")
    assert bad_purpose.value.code == "invalid_upload"

    async def refused(body: Any, **kwargs: Any) -> dict[str, Any]:
        response = await client.post("/v1/files", content=body, **kwargs)
        assert response.status_code == 400, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == "invalid_upload" and error["type"] == "invalid_request_error"
        return error

    await refused(multipart(("purpose", None, b"batch")), headers=MULTIPART)  # no file part
    await refused(multipart(("file", "a.txt", b"a")), headers=MULTIPART)  # no purpose
    await refused(multipart(("purpose", None, b"batch_output"), ("file", "a.txt", b"a")), headers=MULTIPART)
    await refused(multipart(("purpose", None, b"batch"), ("file", None, b"not a file")), headers=MULTIPART)
    await refused(b'{"purpose": "batch"}', headers={"Content-Type": "application/json"})
    await refused(b"--nope\r\n", headers=MULTIPART)  # cut short
    assert (await client.get("/v1/files")).json()["data"] == []

    # `purpose` may come after the file (curl -F file=@x -F purpose=batch); unknown fields are skipped.
    ok = await client.post("/v1/files", headers=MULTIPART, content=multipart(
        ("file", "dir/../späte.txt", b"late purpose"), ("expires_after[anchor]", None, b"created_at"),
        ("purpose", None, b"user_data")))
    assert ok.status_code == 200, ok.text
    assert ok.json()["filename"] == "späte.txt" and ok.json()["bytes"] == len(b"late purpose")
    download = await client.get(f"/v1/files/{ok.json()['id']}/content")
    assert download.content == b"late purpose"
    assert download.headers["content-disposition"] == \
        "attachment; filename=\"sp?te.txt\"; filename*=UTF-8''sp%C3%A4te.txt"
    unauthenticated = await client.post("/v1/files", headers={**MULTIPART, "Authorization": "Bearer sk-sy-wrong"},
                                        content=multipart(("purpose", None, b"batch"), ("file", "a", b"a")))
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "invalid_api_key"


async def test_a_large_upload_streams_through_the_api(stack: Stack, user: User, client: httpx.AsyncClient,
                                                      files_of: None) -> None:
    size, pid = 50 * MiB, stack.api.pid
    peak_known = reset_peak_rss(pid)
    before = vm(pid, "VmRSS")
    data = Generated(size)
    response = await client.post("/v1/files", headers=MULTIPART, timeout=120, content=multipart(
        ("purpose", None, b"batch"), ("file", "big.bin", data.chunks())))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bytes"] == size and body["sha256"] == data.digest.hexdigest()

    downloaded, received = hashlib.sha256(), 0
    async with client.stream("GET", f"/v1/files/{body['id']}/content", timeout=120) as download:
        assert download.headers["content-length"] == str(size)
        async for chunk in download.aiter_bytes():
            downloaded.update(chunk)
            received += len(chunk)
    assert received == size and downloaded.hexdigest() == data.digest.hexdigest()
    grown = (vm(pid, "VmHWM") if peak_known else vm(pid, "VmRSS")) - before
    assert grown < size / 2, f"the API grew by {grown / MiB:.1f} MiB for a {size / MiB:.0f} MiB file"


async def test_the_platform_stores_batch_output_files_the_api_serves(stack: Stack, user: User,
                                                                     files_of: None) -> None:
    settings = msgspec.structs.replace(stack.settings, max_file_bytes=1_000_000)  # the API's storage, a small limit
    clients = await Clients.connect(settings, pool_size=(1, 2))
    try:
        row = await files.store_file(clients, user.id, "batch_1_output.jsonl", "batch_output",
                                     uneven(b'{"id": "line"}\n' * 50_000))
        assert row.purpose == "batch_output" and row.bytes == 15 * 50_000
        assert await files.get_file(clients.pool, row.id, user.id) == row
        assert await files.get_file(clients.pool, row.id, uuid.uuid4()) is None
        assert b"".join([c async for c in await files.read_file(clients, row)]) == b'{"id": "line"}\n' * 50_000
        # A batch's output is never refused half-way through a batch: no size limit, no quota.
        huge = await files.store_file(clients, user.id, "huge.jsonl", "batch_output", Generated(2 * MiB).chunks())
        assert huge.bytes == 2 * MiB
        await files.delete_file(clients, huge.id, user.id)
        with pytest.raises(FileTooLarge):  # ...while an upload of the same size is refused
            await files.store_file(clients, user.id, "huge.jsonl", "batch", Generated(2 * MiB).chunks())
        with pytest.raises(InvalidUpload):
            await files.store_file(clients, user.id, "x", "fine-tune", uneven(b"x"))
    finally:
        await clients.close()
    client = sdk(stack.api_url, user)
    assert [f.id for f in (await client.files.list(purpose="batch_output")).data] == [row.id]
    assert (await client.files.content(row.id)).content == b'{"id": "line"}\n' * 50_000


# --- Limits, on an API process of their own -----------------------------------------------------------------------


@dataclass
class SmallApi:
    url: str
    data_dir: Path
    proc: Process

    def stored(self) -> list[Path]:
        return [p for p in (self.data_dir / "files").rglob("*") if p.is_file()]


@pytest.fixture
def small_api(stack: Stack, tmp_path: Path) -> Iterator[SmallApi]:
    """An API with a 1 MB file limit and a 2.5 MB quota, storing under a directory of its own."""
    env = {**stack.env, "SWITCHYARD_MAX_FILE_BYTES": "1000000", "SWITCHYARD_FILE_QUOTA_BYTES": "2500000",
           "SWITCHYARD_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    proc = start_api(env, port, stack.log_dir, name="api-small-files")
    try:
        yield SmallApi(f"http://127.0.0.1:{port}", tmp_path / "data", proc)
    finally:
        proc.stop()


def file_rows(stack: Stack, user: User) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM files WHERE owner_id = %s", (user.id,)).fetchone()
    return int(row[0]) if row else 0


async def test_a_file_over_the_limit_is_413_and_nothing_is_stored(stack: Stack, user: User,
                                                                   small_api: SmallApi) -> None:
    client = sdk(small_api.url, user)
    with pytest.raises(openai.APIStatusError) as announced:  # Content-Length says so: refused before reading
        await client.files.create(file=("big.bin", b"x" * 1_500_000), purpose="batch")
    assert announced.value.status_code == 413 and announced.value.code == "file_too_large"

    async with httpx.AsyncClient(base_url=small_api.url, headers={"Authorization": f"Bearer {user.key}"}) as raw:
        # Chunked: no Content-Length, so the limit trips in the middle of the file.
        streamed = await raw.post("/v1/files", headers=MULTIPART, content=multipart(
            ("purpose", None, b"batch"), ("file", "big.bin", Generated(3 * MiB).chunks())))
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "file_too_large"
        exact = await raw.post("/v1/files", headers=MULTIPART, content=multipart(
            ("purpose", None, b"batch"), ("file", "exact.bin", b"y" * 1_000_000)))
        assert exact.status_code == 200 and exact.json()["bytes"] == 1_000_000
    assert file_rows(stack, user) == 1 and len(small_api.stored()) == 1


async def test_quota_is_413_and_holds_under_concurrent_uploads(stack: Stack, user: User,
                                                               small_api: SmallApi) -> None:
    client = sdk(small_api.url, user)

    async def upload(i: int) -> str | None:
        try:
            return (await client.files.create(file=(f"f{i}.bin", b"z" * 900_000), purpose="user_data")).id
        except openai.APIStatusError as exc:
            assert exc.status_code == 413 and exc.code == "file_quota_exceeded", exc
            return None

    # 2.5 MB of quota fits two 900 kB files, however the uploads interleave.
    results = await asyncio.gather(*(upload(i) for i in range(5)))
    kept = [r for r in results if r]
    assert len(kept) == 2 and file_rows(stack, user) == 2 and len(small_api.stored()) == 2
    assert await upload(9) is None
    await client.files.delete(kept[0])
    assert await upload(10) is not None
    assert file_rows(stack, user) == 2 and len(small_api.stored()) == 2


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(stack: Stack, user: User,
                                                                 small_api: SmallApi) -> None:
    port = int(small_api.url.rsplit(":", 1)[1])
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    head = part_head("purpose") + b"batch\r\n" + part_head("file", "cut.bin")
    writer.write(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + user.key.encode()
                 + b"\r\nContent-Type: " + MULTIPART["Content-Type"].encode()
                 + b"\r\nContent-Length: %d\r\n\r\n" % (len(head) + 900_000) + head + b"x" * 500_000)
    await writer.drain()
    await asyncio.sleep(0.5)
    assert [p.name for p in small_api.stored() if p.name.endswith(".part")]  # mid-file, in a temp file
    writer.transport.abort()
    await asyncio.sleep(0.5)
    assert file_rows(stack, user) == 0 and small_api.stored() == []
    assert small_api.proc.alive()
    assert (await sdk(small_api.url, user).files.list()).data == []


# --- Every storage backend through the same protocol ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_url() -> Iterator[tuple[str, Settings]]:
    """A local S3 server (moto) with a bucket; the settings that reach it."""
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        httpx.put(f"http://127.0.0.1:{port}/bucket").raise_for_status()  # moto takes unsigned admin calls
        yield f"http://127.0.0.1:{port}", Settings(
            storage_url="s3://bucket/switchyard", s3_endpoint=f"http://127.0.0.1:{port}", s3_region="us-east-1",
            s3_access_key_id="test", s3_secret_access_key="test")
    finally:
        server.stop()


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> FileStorage:
    match request.param:
        case "local":
            return storage_from(Settings(data_dir=str(tmp_path)))
        case "memory":
            return storage_from(Settings(storage_url="memory://"))
    _, settings = request.getfixturevalue("s3_url")
    return storage_from(settings)


async def uneven(data: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    """`data` in chunks of varied sizes; raises after `fail_after` bytes, like a client that goes away."""
    sent, rng = 0, random.Random(3)
    while sent < len(data):
        n = rng.randint(1, 300_000)
        yield data[sent:sent + n]
        sent += n
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("the client went away")


async def read_all(storage: FileStorage, key: str) -> tuple[bytes, list[int]]:
    chunks = [c async for c in await storage.get(key)]
    return b"".join(chunks), [len(c) for c in chunks]


async def test_storage_round_trip(storage: FileStorage) -> None:
    data = random.Random(5).randbytes(6 * MiB + 123)
    await storage.put("owner/file-1", uneven(data))
    got, sizes = await read_all(storage, "owner/file-1")
    assert got == data and max(sizes) <= CHUNK_BYTES
    await storage.put("owner/empty", uneven(b""))
    assert (await read_all(storage, "owner/empty"))[0] == b""
    await storage.put("owner/file-1", uneven(b"replaced"))
    assert (await read_all(storage, "owner/file-1"))[0] == b"replaced"
    await storage.delete("owner/file-1")
    await storage.delete("owner/file-1")  # idempotent
    with pytest.raises(FileNotFound):
        await storage.get("owner/file-1")
    with pytest.raises(FileNotFound):
        await storage.get("owner/never-written")


async def test_a_failed_put_leaves_no_object(storage: FileStorage, tmp_path: Path) -> None:
    data = random.Random(6).randbytes(12 * MiB)
    with pytest.raises(ConnectionResetError):
        await storage.put("owner/partial", uneven(data, fail_after=7 * MiB))
    with pytest.raises(FileNotFound):
        await storage.get("owner/partial")
    if isinstance(storage, LocalStorage):
        assert [p for p in storage.root.rglob("*") if p.is_file()] == []  # no temp file either


async def test_s3_failed_put_aborts_its_multipart_upload(s3_url: tuple[str, Settings]) -> None:
    endpoint, settings = s3_url
    storage = storage_from(settings)
    with pytest.raises(ConnectionResetError):
        await storage.put("owner/aborted", uneven(random.Random(1).randbytes(11 * MiB), fail_after=6 * MiB))
    listing = httpx.get(f"{endpoint}/bucket?uploads").text
    assert "<Upload>" not in listing, listing


def test_storage_from_picks_the_backend(tmp_path: Path) -> None:
    local = storage_from(Settings(data_dir=str(tmp_path)))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "files"
    assert isinstance(storage_from(Settings(storage_url=f"file://{tmp_path}/x")), LocalStorage)
    assert isinstance(storage_from(Settings(storage_url="memory://")), ObjectStorage)
    assert isinstance(storage_from(Settings(storage_url="s3://bucket/prefix", s3_region="us-east-1")), ObjectStorage)
    with pytest.raises(SystemExit):
        storage_from(Settings(storage_url="ftp://nope"))
