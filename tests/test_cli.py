"""The admin commands of the `switchyard` CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

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
