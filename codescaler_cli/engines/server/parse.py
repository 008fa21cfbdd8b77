"""What RL trainers send, parsed back into (question, response) (pure).

Understood chat templates, for the policy's prompt (``/get_reward``) and for the reward
model's own rendering (``/classify``):

* ChatML, as Qwen, Qwen2/2.5/3 and CodeScaler render it: ``<|im_start|>user\\n...<|im_end|>``;
* Llama 3: ``<|start_header_id|>user<|end_header_id|>\\n\\n...<|eot_id|>``;
* Llama 2 / Mistral: ``[INST] ... [/INST]``;
* a plain prompt with none of these markers: the whole prompt is the question.

Anything else (markers of a template but no user turn) is an error for the caller to
report, never a silent reward of 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class ParseError(ValueError):
    """A prompt or conversation that cannot be read back; the message is one line."""


@dataclass(frozen=True)
class Template:
    name: str
    user: re.Pattern[str]  # group 1: a user turn's content
    assistant_open: str  # what starts the assistant's turn
    end_of_turn: str


TEMPLATES = (
    Template(
        "chatml",
        re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S),
        "<|im_start|>assistant\n",
        "<|im_end|>",
    ),
    Template(
        "llama3",
        re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    Template("inst", re.compile(r"\[INST\](.*?)\[/INST\]", re.S), "[/INST]", "</s>"),
)
_MARKERS = ("<|im_start|>", "<|start_header_id|>", "[INST]", "<|user|>", "<start_of_turn>")
# Tokens a policy's decoded output may end with (it is decoded with special tokens kept).
END_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
    "<eos>",
)
# Qwen3-style templates render an empty reasoning block before the final assistant turn.
EMPTY_THINK = "<think>\n\n</think>\n\n"


def template_of(text: str) -> Template | None:
    for template in TEMPLATES:
        if template.assistant_open in text or template.user.search(text):
            return template
    return None


def question_of(prompt: str) -> str:
    """The question of a policy prompt: its last user turn, or the whole plain prompt."""
    template = template_of(prompt)
    if template is not None:
        turns = template.user.findall(prompt)
        if turns:
            return turns[-1].strip() if template.name == "inst" else turns[-1]
    if any(marker in prompt for marker in _MARKERS):
        raise ParseError(
            "the prompt has chat-template markers but no user turn this server can read "
            "(ChatML/Qwen, Llama 3, [INST] or a plain prompt)"
        )
    return prompt.strip()


def strip_end(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without the end-of-turn and padding tokens a decoded generation ends with."""
    tokens = tuple(t for t in (*END_TOKENS, *extra) if t)
    while True:
        stripped = text.rstrip()
        for token in tokens:
            if stripped.endswith(token):
                text = stripped[: -len(token)]
                break
        else:
            return text


def strip_start(text: str, tokens: Iterable[str]) -> str:
    """``text`` without padding tokens at its start (left-padded batches)."""
    tokens = tuple(t for t in tokens if t)
    changed = True
    while changed:
        changed = False
        for token in tokens:
            if text.startswith(token):
                text, changed = text[len(token) :], True
    return text


def response_of(query: str, prompt: str, pad_tokens: Sequence[str] = ()) -> str:
    """The policy's response: the query minus its prompt, end-of-turn and padding removed."""
    query = strip_start(query, pad_tokens)
    if query.startswith(prompt):
        response = query[len(prompt) :]
    else:  # the prompt was shortened or decoded differently: start after the last turn opener
        template = template_of(prompt) or template_of(query)
        cut = query.rfind(template.assistant_open) if template else -1
        if cut < 0:
            raise ParseError("the query does not start with its prompt and has no assistant turn")
        response = query[cut + len(template.assistant_open) :]  # type: ignore[union-attr]
    return strip_end(response, pad_tokens)


def conversation_of(text: str, pad_tokens: Sequence[str] = ()) -> tuple[str, str]:
    """(question, response) of a conversation rendered with a reward model's chat template:
    the last user turn, and the assistant turn that closes it."""
    text = strip_start(text, pad_tokens)
    template = template_of(text)
    if template is None:
        raise ParseError(
            "the input is not a conversation in a chat template this server can read "
            "(ChatML/Qwen, Llama 3, [INST]); send messages, or run with --classify-extract none"
        )
    cut = text.rfind(template.assistant_open)
    if cut < 0:
        raise ParseError("the conversation has no assistant turn to score")
    turns = template.user.findall(text[:cut])
    if not turns:
        raise ParseError("the conversation has no user turn before the assistant's")
    response = text[cut + len(template.assistant_open) :]
    end = response.find(template.end_of_turn)
    if end >= 0:
        response = response[:end]
    response = response.removeprefix(EMPTY_THINK)
    question = turns[-1].strip() if template.name == "inst" else turns[-1]
    return question, strip_end(response, pad_tokens)


def messages_of(messages: object) -> tuple[str, str]:
    """(question, response) of chat messages: the last user message, and the assistant
    message that ends the conversation."""
    if not isinstance(messages, list) or not messages:
        raise ParseError("messages must be a non-empty list of {role, content} objects")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ParseError("every message needs a string content")
    if messages[-1].get("role") != "assistant":
        raise ParseError("the last message must be the assistant's response to score")
    users = [m["content"] for m in messages[:-1] if m.get("role") == "user"]
    if not users:
        raise ParseError("the messages have no user turn before the assistant's")
    return users[-1], messages[-1]["content"]
