"""One handler per job kind, in one table.

Every member of the `jobs.kinds.Job` union has exactly one entry here (a
test checks it), and a worker runs nothing else: `workers/execute.py`
decodes the claimed row into its `Job` and calls `HANDLERS[kind]` with the
job's typed input.
"""

from __future__ import annotations

from jobs.states import Kind
from workers.handlers import billing, chat, embedding, files, webhooks
from workers.handlers.base import Handler, Outcome

#: The handler of each job kind.
HANDLERS: dict[str, Handler] = {
    Kind.CHAT_COMPLETION: chat.run,
    Kind.EMBEDDING: embedding.run,
    Kind.FILE_PROCESS: files.run,
    Kind.WEBHOOK_DELIVER: webhooks.run,
    Kind.BILLING_TOPUP: billing.run_topup,
    Kind.BILLING_GRANT: billing.run_grant,
}

__all__ = ["HANDLERS", "Handler", "Outcome"]
