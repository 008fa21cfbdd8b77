"""Reading trainers' prompts and conversations back into (question, response) (pure)."""

from __future__ import annotations

import pytest

from codescaler_cli.engines.server.parse import (
    ParseError,
    conversation_of,
    messages_of,
    question_of,
    response_of,
    strip_end,
)

CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nFirst?<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nAdd {a}\nand {b}.<|im_end|>\n<|im_start|>assistant\n"
LLAMA3 = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAdd two numbers.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
INST = "<s>[INST] Add two numbers. [/INST]"


@pytest.mark.parametrize(
    ("prompt", "question"),
    [
        (CHATML, "Add {a}\nand {b}."),  # the last user turn, newlines kept
        (LLAMA3, "Add two numbers."),
        (INST, "Add two numbers."),
        ("  Add two numbers.\n", "Add two numbers."),  # plain prompt
    ],
)
def test_question_is_the_last_user_turn(prompt, question):
    assert question_of(prompt) == question


def test_a_template_without_a_user_turn_is_refused():
    with pytest.raises(ParseError, match="no user turn"):
        question_of("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("prompt", [CHATML, LLAMA3, INST, "Plain.\n"])
def test_response_is_the_query_minus_its_prompt_and_end_tokens(prompt):
    response = "<think>hmm</think>\n```python\nx = 1\n```"
    for end in ("", "<|im_end|>", "<|eot_id|>", "</s>", "<|im_end|>\n<|endoftext|><|endoftext|>"):
        assert response_of(prompt + response + end, prompt, ["<|endoftext|>"]) == response


def test_left_padding_and_a_shortened_prompt_are_handled():
    response = "```python\nx = 1\n```"
    padded = "<|endoftext|><|endoftext|>" + CHATML + response + "<|im_end|>"
    assert response_of(padded, CHATML, ["<|endoftext|>"]) == response
    # The trainer left-truncated the prompt's tokens: the query no longer starts with it.
    assert response_of(CHATML[40:] + response, CHATML) == response
    with pytest.raises(ParseError, match="does not start with its prompt"):
        response_of("something else entirely", "Plain prompt.")


def test_a_reward_model_rendering_is_read_back():
    rendered = (
        "<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n\n</think>\n\n```python\nx = 1\n```<|im_end|>\n"
    )
    assert conversation_of(rendered) == ("Add two numbers.", "```python\nx = 1\n```")
    assert conversation_of(LLAMA3 + "y = 2<|eot_id|>") == ("Add two numbers.", "y = 2")
    with pytest.raises(ParseError, match="not a conversation"):
        conversation_of("def f(): pass")
    with pytest.raises(ParseError, match="no user turn"):
        conversation_of("<|im_start|>assistant\nx<|im_end|>")


def test_messages():
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "code"}]  # fmt: skip
    assert messages_of(msgs) == ("q2", "code")
    for bad, needle in (
        ([], "non-empty list"),
        ([{"role": "user", "content": 3}], "string content"),
        (msgs[:3], "last message must be the assistant's"),
        ([{"role": "assistant", "content": "x"}], "no user turn"),
    ):
        with pytest.raises(ParseError, match=needle):
            messages_of(bad)


def test_strip_end_removes_only_end_tokens():
    # The response's own text (a token in a string, the whitespace it ends with) stays.
    assert strip_end("x = '</s>'  </s> \n<|im_end|>") == "x = '</s>'  "
    assert strip_end("no tokens here ") == "no tokens here "
