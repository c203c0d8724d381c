"""The `embedding` job: embed the texts over the model's route (batched to each target's limit)."""

from __future__ import annotations

from jobs import credits, store
from jobs.kinds import EmbeddingInput, EmbeddingResult
from workers.handlers.base import Outcome, publisher
from workers.routing import EmbedRun
from workers.runtime import Runtime


async def run(rt: Runtime, job: store.JobRow, input: EmbeddingInput, attempts: list[store.AttemptRow]) -> Outcome:
    """One vector per text, in input order, from the first target of the route that serves them all."""

    target, outcome = await EmbedRun(rt, job, input, attempts, publisher(rt, job)).run()
    result = EmbeddingResult(
        data=outcome.vectors,
        model=input.model,
        provider=target.provider,
        provider_model=target.model,
        usage=outcome.usage,
    )
    # Input tokens only, at the price of the target that served it.
    return Outcome(result, charge=credits.cost(outcome.usage.prompt_tokens, 0, target.input_price, 0))
