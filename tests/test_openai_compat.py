"""The OpenAI-compatible endpoint, driven by the real `openai` SDK."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Stack, User, make_user


def sdk(stack: Stack, user: User) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key=user.key, max_retries=0)


async def test_completion_with_an_unchanged_openai_client(stack: Stack, user: User) -> None:
    client = sdk(stack, user)
    completion = await client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "Hello from the SDK"}], max_tokens=5,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "length"
    assert len((completion.choices[0].message.content or "").split()) == 5
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    # It is a job underneath: visible, charged, with its attempt.
    jobs = (await client.get("/jobs", cast_to=object))["data"]  # type: ignore[index]
    assert jobs[0]["status"] == "succeeded" and jobs[0]["id"].replace("-", "") in completion.id


async def test_streaming_with_usage(stack: Stack, user: User) -> None:
    client = sdk(stack, user)
    stream = await client.chat.completions.create(
        model="t-fallback", messages=[{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": [{"type": "text", "text": "stream it"}]}],
        stream=True, stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert finish == "stop" and len(text.split()) == 16
    assert usage is not None and usage.completion_tokens == 16


async def test_errors_come_back_in_openai_shape(stack: Stack, user: User) -> None:
    client = sdk(stack, user)
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    stranger = openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key="sk-sy-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await stranger.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="sim-small", messages=[])
    assert bad.value.code == "validation_error"
    poor = await make_user(stack.env["DATABASE_URL"], credits=0)
    with pytest.raises(openai.APIStatusError) as short:
        await sdk(stack, poor).chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "x"}])
    assert short.value.status_code == 402 and short.value.code == "insufficient_credits"
    with pytest.raises(openai.APIStatusError) as failed:
        await client.chat.completions.create(model="sim-small",
                                             messages=[{"role": "user", "content": "[[sim: fault=401]]"}])
    assert failed.value.status_code == 502 and failed.value.code == "provider_rejected"


async def test_a_stream_that_fails_raises_in_the_sdk(stack: Stack, user: User) -> None:
    stream = await sdk(stack, user).chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "[[sim: fault=400]] no"}], stream=True,
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
