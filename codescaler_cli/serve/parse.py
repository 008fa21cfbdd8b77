"""What RL trainers send, read back into (question, response) (pure).

Trust boundary: the trainer's prompt (and a rendered conversation up to its final answer)
is trusted structure; the response is untrusted content written by a policy optimised to
raise its reward. So every boundary is found in the trusted part, from its start or its
known end, and nothing a response writes can move a turn boundary, change the question
or cut the code: template tokens inside a response (or a question) are literal content.

* ``/get_reward``: the response is the query minus its prompt (exactly; else with
  whitespace runs compared loosely; else the tail of a prompt the trainer cut at its
  start). The question is the prompt's last user turn, read with the *policy's* template
  (ChatML, Llama 3, ``[INST]``, or a plain prompt); turns start only at turn boundaries.
* ``/classify`` text: a conversation rendered with the *reward model's own* template.
  :func:`layout_of` learns that template's markers by rendering probe conversations; the
  response starts at the first final-answer opener, so text a response injects after it
  is content. The question is the last user turn before that opener.
* ``messages``: the structure is JSON; nothing is parsed out of text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


class ParseError(ValueError):
    """A prompt or conversation that cannot be read back; the message is one line."""


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
BOS_TOKENS = ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>")
TRUNCATED_TRIES = 64  # occurrences of a prompt's closing tried in a query (bounded work)


@dataclass(frozen=True)
class PromptTemplate:
    """A policy chat template, as much of it as finding the last user turn needs."""

    name: str
    opener: re.Pattern[str]  # a turn opener at a turn boundary; group "role"
    end: str  # what ends a turn's content (before the next opener)
    generation: re.Pattern[str]  # the generation prompt a templated prompt ends with


TEMPLATES = (
    PromptTemplate(
        "chatml",
        re.compile(r"(?:\A|(?<=<\|im_end\|>\n))<\|im_start\|>(?P<role>[a-z_]+)\n"),
        "<|im_end|>\n",
        # Qwen3 with thinking off adds an empty reasoning block; R1-style templates open one.
        re.compile(r"(?<=<\|im_end\|>\n)<\|im_start\|>assistant\n(?:<think>\n(?:\n</think>\n\n)?)?\Z"),
    ),
    PromptTemplate(
        "llama3",
        re.compile(r"(?:\A|(?<=<\|eot_id\|>))<\|start_header_id\|>(?P<role>[a-z_]+)<\|end_header_id\|>\n\n"),
        "<|eot_id|>",
        re.compile(r"(?<=<\|eot_id\|>)<\|start_header_id\|>assistant<\|end_header_id\|>\n\n\Z"),
    ),
)  # fmt: skip
# [INST] (Llama 2, Mistral): a user turn opens at the start, after an end of sequence or
# after Mistral's system prompt.
INST_OPEN = re.compile(
    r"(?:\A|(?<=</s>)|(?<=</s><s>)|(?<=</s> <s>)|(?<=\[/SYSTEM_PROMPT\]))\s*\[INST\]"
)
INST_CLOSE = "[/INST]"
LLAMA2_SYSTEM = re.compile(r"\s*<<SYS>>.*?<</SYS>>", re.S)
# A prompt that starts like a rendered turn of a template this module cannot read.
UNREAD_TURN = re.compile(
    r"<\|im_start\|>[a-z_]+\n|<\|start_header_id\|>[a-z_]+<\|end_header_id\|>|\[INST\]"
    r"|<\|(?:user|system|assistant)\|>|<start_of_turn>(?:user|model)|<｜User｜>"
)


def strip_start(text: str, tokens: Iterable[str]) -> str:
    """``text`` without padding / BOS tokens (and whitespace between them) at its start."""
    tokens = tuple(t for t in tokens if t)
    while True:
        stripped = text.lstrip()
        for token in tokens:
            if stripped.startswith(token):
                text = stripped[len(token) :]
                break
        else:
            return text


def strip_end(text: str, pads: Iterable[str] = (), ends: Iterable[str] = END_TOKENS) -> str:
    """A decoded generation without what follows its content: trailing padding, then one
    end-of-turn token. A token the response wrote as text before those stays."""
    pads = tuple(t for t in pads if t)
    while True:
        stripped = text.rstrip()
        token = next((t for t in pads if stripped.endswith(t)), None)
        if token is None:
            break
        text = stripped[: -len(token)]
    stripped = text.rstrip()
    for token in (t for t in ends if t):
        if stripped.endswith(token):
            return stripped[: -len(token)]
    return text


# ---------------------------------------------------------------- /get_reward


def _template_of(prompt: str) -> PromptTemplate | str | None:
    """The template that rendered ``prompt`` (read from its end: the generation prompt),
    ``"inst"``, or None for a plain prompt."""
    for template in TEMPLATES:
        if template.generation.search(prompt):
            return template
    if prompt.rstrip().endswith(INST_CLOSE) and INST_OPEN.search(prompt):
        return "inst"
    return None


def question_of(prompt: str, pads: Sequence[str] = ()) -> str:
    """The question of a policy prompt: its last user turn, or the whole plain prompt."""
    text = strip_start(prompt, (*pads, *BOS_TOKENS))
    template = _template_of(text)
    if template == "inst":
        opens = list(INST_OPEN.finditer(text))
        question = text[opens[-1].end() : text.rstrip().rfind(INST_CLOSE)]
        return LLAMA2_SYSTEM.sub("", question, count=1).strip()
    if isinstance(template, PromptTemplate):
        turns = list(template.opener.finditer(text))
        for turn, after in zip(reversed(turns[:-1]), reversed(turns[1:]), strict=True):
            if turn["role"] == "user":
                return text[turn.end() : after.start() - len(template.end)]
        raise ParseError(f"the prompt ({template.name}) has no user turn")
    if UNREAD_TURN.match(text.lstrip()):
        raise ParseError(
            "the prompt starts like a chat-template turn but does not end with a generation "
            "prompt this server reads (ChatML/Qwen, Llama 3, [INST]); send it as rendered for "
            "generation, or as plain text"
        )
    return text.strip()


@functools.lru_cache(maxsize=256)
def _loose(prompt: str) -> re.Pattern[str] | None:
    """The prompt with every whitespace run matching any run (or none)."""
    words = prompt.split()
    return re.compile(r"\s*" + r"\s*".join(map(re.escape, words))) if words else None


def _prompt_end(query: str, prompt: str) -> int | None:
    """Where the prompt ends in the query, by the documented rules (or None)."""
    if query.startswith(prompt):
        return len(prompt)
    loose = _loose(prompt)
    if loose is not None and (m := loose.match(query)) is not None:
        end = m.end()
        trailing = prompt[len(prompt.rstrip()) :]
        return end + len(trailing) if query.startswith(trailing, end) else end
    # The trainer cut the prompt's start to fit (OpenRLHF keeps its last tokens): the query
    # starts with a tail of the prompt that holds the prompt's whole closing (end of the
    # last turn and the generation prompt), which the response cannot write before.
    template = _template_of(prompt)
    if not isinstance(template, PromptTemplate):
        return None
    closing = prompt[template.generation.search(prompt).start() - len(template.end) :]  # type: ignore[union-attr]
    start = 0
    for _ in range(TRUNCATED_TRIES):
        at = query.find(closing, start, len(prompt))
        if at < 0:
            return None
        end = at + len(closing)
        head = query[:end].lstrip("\ufffd")  # a character cut in half decodes as U+FFFD
        if prompt.endswith(head):
            return end
        start = at + 1
    return None


def response_of(query: str, prompt: str, pads: Sequence[str] = ()) -> str:
    """The policy's response: the query minus its prompt, trailing padding and one
    end-of-turn token removed. Raises ParseError when the prompt cannot be found."""
    query = strip_start(query, (*pads, *BOS_TOKENS))
    prompt = strip_start(prompt, (*pads, *BOS_TOKENS))
    end = _prompt_end(query, prompt)
    if end is None:
        raise ParseError(
            "the query does not start with its prompt (compared exactly, then ignoring "
            "whitespace, then as a prompt cut at its start); send the prompt the policy saw"
        )
    return strip_end(query[end:], pads)


# ---------------------------------------------------------------- /classify


@dataclass(frozen=True)
class Layout:
    """Where the reward model's own chat template puts a conversation's parts, learnt by
    rendering probe conversations (:func:`layout_of`)."""

    head: str  # the rendering's start, up to the first user turn's content
    user_open: str  # what comes between an earlier turn's content and a user turn's
    answer_open: str  # what locates the final answer: its first occurrence
    answer_skip: int  # how much of answer_open comes before the response's text
    inserted: str  # what the template adds before an answer without reasoning
    tail: str  # what follows the final answer
    marks_final: bool  # the final answer's opener differs from an earlier assistant turn's


_Q, _A, _Q2, _A2, _R = "\ue000", "\ue001", "\ue002", "\ue003", "\ue004"


def _common_prefix(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:n]


def _between(text: str, a: str, b: str) -> str:
    return text[text.index(a) + len(a) : text.index(b)]


def layout_of(render: Callable[[list[dict[str, str]]], str]) -> Layout:
    """The layout of a chat template, from ``render(messages) -> text``."""

    def conv(*contents: str) -> list[dict[str, str]]:
        roles = ("user", "assistant") * len(contents)
        return [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]

    one = render(conv(_Q, _A))
    two = render(conv(_Q, _A, _Q2, _A2))
    reasoned = render(conv(_Q, f"<think>{_R}</think>{_A}"))
    sep = _between(one, _Q, _A)
    earlier = _between(two, _Q, _A)  # an assistant turn that is not the final answer
    opener = _common_prefix(sep, _between(reasoned, _Q, _R if _R in reasoned else _A))
    marks_final = len(opener) > len(earlier) and opener.startswith(earlier)
    skip = len(earlier) if marks_final else len(opener)
    return Layout(
        head=one[: one.index(_Q)],
        user_open=_between(two, _A, _Q2),
        answer_open=opener,
        answer_skip=skip,
        inserted=sep[skip:],
        tail=one[one.index(_A) + len(_A) :],
        marks_final=marks_final,
    )


def conversation_of(text: str, layout: Layout, pads: Sequence[str] = ()) -> tuple[str, str]:
    """(question, response) of a conversation rendered with the reward model's template:
    the response starts at the first final-answer opener; the question is the last user
    turn before it."""
    text = strip_start(text, pads)
    at = text.find(layout.answer_open) if layout.answer_open else -1
    if at < 0:
        raise ParseError(
            "the input is not a conversation rendered with this model's chat template (no "
            f"final assistant turn {layout.answer_open!r}); send messages, or run with "
            "--classify-extract none"
        )
    turn = text.rfind(layout.user_open, 0, at) if layout.user_open else -1
    if turn >= 0:
        start = turn + len(layout.user_open)
    elif layout.head and text.startswith(layout.head):
        start = len(layout.head)
    else:
        raise ParseError("the conversation has no user turn before the assistant's")
    response = text[at + layout.answer_skip :]
    response = strip_end(response, pads, ())
    for tail in (layout.tail, layout.tail.rstrip()):
        if tail and response.endswith(tail):
            response = response[: -len(tail)]
            break
    return text[start:at], response.removeprefix(layout.inserted)


def read_queries(
    queries: Sequence[str], prompts: Sequence[str], pads: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(question, response) of each OpenRLHF query and prompt; the error names the query."""
    pairs = []
    for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        try:
            pairs.append((question_of(prompt, pads), response_of(query, prompt, pads)))
        except ParseError as exc:
            raise ParseError(f"query[{i}]: {exc}") from None
    return pairs


def read_conversations(
    texts: Sequence[str], layout: Layout, pads: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(question, response) of each rendered conversation; the error names the input."""
    pairs = []
    for i, text in enumerate(texts):
        try:
            pairs.append(conversation_of(text, layout, pads))
        except ParseError as exc:
            raise ParseError(f"input[{i}]: {exc}") from None
    return pairs


def messages_of(messages: object) -> tuple[str, str]:
    """(question, response) of chat messages: the last user message, and the assistant
    message that ends the conversation."""
    if not isinstance(messages, list) or not messages:
        raise ParseError("messages must be a non-empty list of {role, content} objects")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ParseError("every message needs a string content")
        if not isinstance(m.get("role"), str):
            raise ParseError("every message needs a string role")
    if messages[-1]["role"] != "assistant":
        raise ParseError("the last message must be the assistant's response to score")
    users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
    if not users:
        raise ParseError("the messages have no user turn before the assistant's")
    return users[-1], messages[-1]["content"]
