"""The `switchyard` CLI: its commands, the admin commands, the pass-through process commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg
import pytest

from api import cli
from jobs.accounts import KEY_PREFIX, hash_key


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_create_user_and_key_prints_a_working_key_once(servers: dict[str, str]) -> None:
    made = run_cli("create-user", "--email", "ops@example.com", "--role", "admin", env=servers)
    assert made.returncode == 0, made.stderr
    again = run_cli("create-user", "--email", "OPS@example.com", env=servers)
    assert again.returncode != 0 and "already exists" in again.stderr

    key = run_cli("create-key", "--email", "ops@example.com", "--name", "laptop", env=servers)
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    assert secret.startswith(KEY_PREFIX)
    with psycopg.connect(servers["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.name, u.role FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = %s",
            (hash_key(secret),),
        ).fetchone()
        assert row == ("laptop", "admin")
        # Only the hash is stored.
        assert conn.execute("SELECT count(*) FROM api_keys WHERE prefix = %s", (secret,)).fetchone() == (0,)

    missing = run_cli("create-key", "--email", "nobody@example.com", env=servers)
    assert missing.returncode != 0 and "create-user" in missing.stderr


def test_pass_through_commands_hand_over_every_argument_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    # `--help` and `--` belong to the wrapped program, not to the switchyard parser.
    handed: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(cli, "_PASS_THROUGH", {
        name: lambda args, name=name: handed.append((name, args.rest)) for name in cli._PASS_THROUGH})
    calls = [["worker", "--help"], ["worker", "--queues", "chat", "--", "-p2"], ["simulator", "--port", "1"],
             ["dev", "-h"]]
    for argv in calls:
        cli.main(argv)
    assert handed == [(argv[0], argv[1:]) for argv in calls]


def test_help_lists_every_command() -> None:
    wide = {"COLUMNS": "200", "NO_COLOR": "1"}
    top = run_cli("--help", env=wide)
    assert top.returncode == 0, top.stderr
    for command in ("dev", "migrate", "api", "worker", "maintenance", "simulator", "create-user", "create-key",
                    "batch", "chat"):
        assert re.search(rf"^\W*{command}\s", top.stdout, re.M), (command, top.stdout)
    batch = run_cli("batch", "--help", env=wide)
    assert batch.returncode == 0, batch.stderr
    for command in ("submit", "list", "status", "cancel", "download"):
        assert re.search(rf"^\W*{command}\s", batch.stdout, re.M), (command, batch.stdout)
