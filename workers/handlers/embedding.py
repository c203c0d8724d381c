"""The `embedding` job: embed the texts over the model's route (batched to each target's limit)."""

from __future__ import annotations

from typing import Any

from jobs import credits, store
from jobs.kinds import EmbeddingInput, EmbeddingResult
from jobs.states import EventType
from workers.handlers.base import Outcome
from workers.routing import EmbedRun
from workers.runtime import Runtime


async def run(rt: Runtime, job: store.JobRow, input: EmbeddingInput, attempts: list[store.AttemptRow]) -> Outcome:
    """One vector per text, in input order, from the first target of the route that serves them all."""

    async def publish(type: EventType, data: dict[str, Any]) -> None:
        await rt.events.publish(job.id, job.owner_id, type, data)

    target, outcome = await EmbedRun(rt, job, input, attempts, publish).run()
    result = EmbeddingResult(
        data=outcome.vectors,
        model=input.model,
        provider=target.provider,
        provider_model=target.model,
        usage=outcome.usage,
    )
    # Input tokens only, at the price of the target that served it.
    return Outcome(result, charge=credits.cost(outcome.usage.prompt_tokens, 0, target.input_price, 0))
