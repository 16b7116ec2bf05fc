"""/v1/responses through the official openai client: text and message input, instructions, streaming
events, the stateless refusals, and that it answers what the chat path answers for the same conversation."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

PROMPT = "Name a colour."


def _chat_text(live_server, messages, max_tokens):
    chat = live_server.client().chat.completions.create(model=live_server.model, messages=messages,
                                                        max_completion_tokens=max_tokens, temperature=0)
    return chat.choices[0].message.content, chat.choices[0].finish_reason


def test_text_input_with_instructions_answers_as_the_chat_path(live_server):
    response = live_server.client().responses.create(model=live_server.model, input=PROMPT, instructions="Be brief.",
                                                     max_output_tokens=12, temperature=0)
    text, finish = _chat_text(live_server, [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": PROMPT}], 12)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == live_server.model and response.instructions == "Be brief."
    assert response.output_text == text and text
    assert response.status == ("incomplete" if finish == "length" else "completed")
    assert response.usage.output_tokens <= 12 and response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens)
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"


def test_message_items_and_a_cut_reply_are_incomplete(live_server):
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}]
    response = live_server.client().responses.create(model=live_server.model, input=conversation,
                                                     max_output_tokens=2, temperature=0)
    text, _ = _chat_text(live_server, [{"role": "user", "content": "Hi"},
                                       {"role": "assistant", "content": "Hello! How can I help?"},
                                       {"role": "user", "content": PROMPT}], 2)
    assert response.output_text == text
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 2


def test_streamed_events_rebuild_the_non_streamed_response(live_server):
    client = live_server.client()
    kwargs = dict(model=live_server.model, input=PROMPT, max_output_tokens=40, temperature=0)
    whole = client.responses.create(**kwargs)
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    last = "response.incomplete" if whole.status == "incomplete" else "response.completed"
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", last]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_sdk_stream_helper_gets_the_final_response(live_server):
    with live_server.client().responses.stream(model=live_server.model, input=[{"role": "user", "content": "Hi"}],
                                               max_output_tokens=400, temperature=0) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(texts) and texts


@pytest.mark.parametrize("fields, param, words", [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
    ({"store": True}, "store", "store=false"),
    ({"conversation": "conv_1"}, "conversation", "stateless"),
    ({"truncation": "auto"}, "truncation", "disabled"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]}, "input",
     "only text"),
    ({"max_output_tokenz": 3}, "max_output_tokenz", "unknown field"),
])
def test_refusals_name_the_field(live_server, fields, param, words):
    body = {"model": live_server.model, "input": "hi", **fields}
    answer = httpx.post(live_server.url + "/v1/responses", json=body, headers=live_server.headers, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_ignored_fields_are_accepted_and_metadata_echoed(live_server):
    response = live_server.client().responses.create(
        model=live_server.model, input="Hi", max_output_tokens=2, store=False, user="u-1", metadata={"k": "v"},
        service_tier="auto", parallel_tool_calls=True, prompt_cache_key="p", safety_identifier="s",
        include=["reasoning.encrypted_content"], reasoning={"effort": "low"}, text={"verbosity": "medium"},
        stream_options=None)
    assert response.metadata == {"k": "v"} and response.output_text


def test_unknown_model_and_bad_sampling_value_are_refused(live_server):
    client = live_server.client()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=live_server.model, input="hi", max_output_tokens=0)
    assert "max_output_tokens" in str(info.value)


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
           "additionalProperties": False}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def test_required_tool_choice_gives_a_function_call_item_matching_the_schema(live_server):
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER}]
    kwargs = dict(model=live_server.model, input="What is the weather in Paris?", tools=tools,
                  tool_choice="required", max_output_tokens=60, temperature=0)
    response = live_server.client().responses.create(**kwargs)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and all(call.name == "get_weather" for call in calls), response.output
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), WEATHER)
    streamed = list(live_server.client().responses.create(stream=True, **kwargs))
    final = streamed[-1].response
    assert [(c.name, c.arguments) for c in final.output if c.type == "function_call"] == [
        (c.name, c.arguments) for c in calls]


def test_text_format_json_schema_output_validates(live_server):
    response = live_server.client().responses.create(
        model=live_server.model, input="Invent a person.", max_output_tokens=60, temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(response.output_text), PERSON)
