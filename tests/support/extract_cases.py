"""Hand-written raw responses for tests/test_extract.py, each with the exact expected result.

Written for this project (not copied from any corpus); they imitate what real models
emit: prose around fences, usage examples after the solution, stray or unclosed fences,
reasoning blocks, several languages, CRLF, tabs and non-ASCII text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    response: str
    code: str  # expected code in auto mode
    valid: bool
    method: str
    n_blocks: int
    flags: tuple[str, ...] = ()


ADD = "def add(a, b):\n    return a + b"
ADD_BLOCK = f"```python\n{ADD}\n```"

STDIN_PROGRAM = """import sys


def main():
    data = sys.stdin.read().split()
    n = int(data[0])
    print(sum(int(x) for x in data[1 : n + 1]))


if __name__ == "__main__":
    main()"""

CASES: list[Case] = [
    # --- one block, tag spellings ---------------------------------------------------
    Case(
        "python_block_with_prose",
        f"Here is the solution:\n\n{ADD_BLOCK}\n\nIt returns the sum of both arguments.",
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case("untagged_block", f"Sure.\n```\n{ADD}\n```\n", ADD, True, "fence:untagged", 1),
    Case("tag_python3", f"```python3\n{ADD}\n```", ADD, True, "fence:python", 1),
    Case("tag_py", f"```py\n{ADD}\n```", ADD, True, "fence:python", 1),
    Case("tag_capitalised", f"```Python\n{ADD}\n```", ADD, True, "fence:python", 1),
    Case("tag_py3_space", f"``` py3\n{ADD}\n```", ADD, True, "fence:python", 1),
    Case(
        "tag_with_attributes",
        f'```python title="solution.py" linenums="1"\n{ADD}\n```',
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case(
        "tag_pandoc_braces",
        f"```{{.python .numberLines}}\n{ADD}\n```",
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case("tag_with_filename", f"```python:src/add.py\n{ADD}\n```", ADD, True, "fence:python", 1),
    Case("tilde_fence", f"~~~python\n{ADD}\n~~~\n", ADD, True, "fence:python", 1),
    Case(
        "trailing_spaces_after_closer",
        f"```python   \n{ADD}\n```   \nDone.",
        ADD,
        True,
        "fence:python",
        1,
    ),
    # --- fence length, character and indentation ------------------------------------
    Case(
        "four_backticks_hold_three",
        "````python\nTEMPLATE = '''\n```\nprint(1)\n```\n'''\nprint(TEMPLATE)\n````\n",
        "TEMPLATE = '''\n```\nprint(1)\n```\n'''\nprint(TEMPLATE)",
        True,
        "fence:python",
        1,
    ),
    Case(
        "tilde_fence_holds_backticks",
        '~~~python\nFENCE = """\n```\n"""\nprint(FENCE)\n~~~',
        'FENCE = """\n```\n"""\nprint(FENCE)',
        True,
        "fence:python",
        1,
    ),
    Case(
        "list_item_fence_3_spaces",
        "1. Define the function:\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n"
        "2. Call it.",
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case(
        "nested_list_fence_6_spaces",
        "- Steps:\n  - Code:\n      ```python\n      def add(a, b):\n          return a + b\n"
        "      ```\n  - Done",
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case(
        "tab_indented_fence_and_code",
        "Steps:\n\t```python\n\tdef add(a, b):\n\t\treturn a + b\n\t```\n",
        "def add(a, b):\n\treturn a + b",
        True,
        "fence:python",
        1,
    ),
    Case(
        "indented_snippet_dedented",
        "```python\n    def add(a, b):\n        return a + b\n```",
        ADD,
        True,
        "fence:python",
        1,
    ),
    Case(
        "fence_in_indented_docstring",
        '```python\ndef render():\n    """Return markdown.\n\n    ```\n    code\n    ```\n    """\n'
        '    return "x"\n```\nThat is all.',
        'def render():\n    """Return markdown.\n\n    ```\n    code\n    ```\n    """\n'
        '    return "x"',
        True,
        "fence:python",
        1,
    ),
    Case(
        "fence_in_module_level_string",
        'Use this:\n```python\nREADME = """\n```\npip install x\n```\n"""\nprint(README)\n```\n'
        "Run it.",
        'README = """\n```\npip install x\n```\n"""\nprint(README)',
        True,
        "fence:python",
        1,
        ("fence_in_string",),
    ),
    Case(
        "inline_fence_in_string",
        '```python\ndef wrap(code):\n    return "```python\\n" + code + "\\n```"\n```',
        'def wrap(code):\n    return "```python\\n" + code + "\\n```"',
        True,
        "fence:python",
        1,
    ),
    # --- unclosed and stray fences --------------------------------------------------
    Case(
        "unclosed_last_fence_complete_code",
        f"Solution:\n```python\n{ADD}\n",
        ADD,
        True,
        "fence:python",
        1,
        ("unclosed_fence",),
    ),
    Case(
        "unclosed_fence_truncated_code",
        "```python\ndef add(a, b):\n    return (a +",
        "def add(a, b):\n    return (a +",
        False,
        "fence:python",
        1,
        ("unclosed_fence",),
    ),
    Case(
        "stray_closing_fence_after_answer",
        f"{ADD_BLOCK}\n\n```",
        ADD,
        True,
        "fence:python",
        1,
        ("stray_fence",),
    ),
    # --- choosing among several blocks ----------------------------------------------
    Case(
        "usage_example_last",
        f"{ADD_BLOCK}\n\nExample usage:\n\n```python\nprint(add(2, 3))  # 5\n```",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "assert_tests_last",
        f"{ADD_BLOCK}\n\nTests:\n```python\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n```",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "test_function_block_last",
        f"{ADD_BLOCK}\n\n```python\ndef test_add():\n    assert add(1, 2) == 3\n\n\n"
        "test_add()\n```",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "usage_with_assignment_last",
        f"{ADD_BLOCK}\n\n```python\nresult = add(2, 3)\nprint(result)\n```",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "usage_example_first",
        "Call it like `add(1, 2)`:\n```python\n>>> add(1, 2)\n3\n```\n"
        f"Implementation:\n{ADD_BLOCK}",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "class_solution_with_usage",
        "```python\nclass Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n```\n"
        "```python\nsol = Solution()\nprint(sol.twoSum([2, 7, 11, 15], 9))\n```",
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i",
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "improved_larger_version_wins",
        "First try:\n```python\ndef is_even(n):\n    return n % 2 == 0\n```\n"
        "Handling non-integers too:\n```python\ndef is_even(n):\n    if not isinstance(n, int):\n"
        "        return False\n    return n % 2 == 0\n```",
        "def is_even(n):\n    if not isinstance(n, int):\n        return False\n"
        "    return n % 2 == 0",
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "equal_size_versions_later_wins",
        "```python\ndef sign(x):\n    return 1 if x > 0 else -1\n```\nFixed:\n"
        "```python\ndef sign(x):\n    return 1 if x < 0 else -1\n```",
        "def sign(x):\n    return 1 if x < 0 else -1",
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "valid_block_beats_invalid_larger",
        "```python\ndef area(r):\n    import math\n    return math.pi * r ** 2\n```\n"
        "Or with validation:\n```python\ndef area(r):\n    if r < 0\n        raise ValueError(r)\n"
        "    return 3.14159 * r * r * 1.0 + 0.0\n```",
        "def area(r):\n    import math\n    return math.pi * r ** 2",
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "broken_solution_beats_valid_usage",
        "```python\ndef add(a, b)\n    return a + b\n```\n```python\nprint(add(1, 2))\n```",
        "def add(a, b)\n    return a + b",
        False,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "stdin_program_beats_sample_output",
        "```python\nn = int(input())\nfor i in range(n):\n    print(i * i)\n```\n"
        "Output:\n```\n0\n1\n4\n```",
        "n = int(input())\nfor i in range(n):\n    print(i * i)",
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "main_guard_program_kept_whole",
        f"Read from stdin:\n\n```python\n{STDIN_PROGRAM}\n```\n\n"
        "Sample input:\n\n```\n3 1 2 3\n```\n",
        STDIN_PROGRAM,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    Case(
        "sample_io_untagged_annotation_prose",
        f"```\nInput: 5\nOutput: 120\n```\n{ADD_BLOCK}\n",
        ADD,
        True,
        "fence:python",
        2,
        ("multiple_blocks",),
    ),
    # --- other languages ------------------------------------------------------------
    Case(
        "several_languages_python_chosen",
        f"Install:\n```bash\npip install numpy\n```\nCode:\n{ADD_BLOCK}\nConfig:\n"
        '```json\n{"a": 1}\n```\nQuery:\n```sql\nSELECT 1;\n```\nOutput:\n```text\n5\n```',
        ADD,
        True,
        "fence:python",
        5,
    ),
    Case(
        "javascript_only",
        "```javascript\nfunction add(a, b) {\n  return a + b;\n}\n```",
        "",
        False,
        "none",
        1,
        ("non_python_only",),
    ),
    Case(
        "javascript_with_untagged_usage",
        "```js\nfunction add(a, b) {\n  return a + b;\n}\n```\n"
        "Usage:\n```\nconsole.log(add(1, 2))\n```",
        "",
        False,
        "none",
        2,
        ("non_python_only",),
    ),
    Case(
        "json_tag_with_python_parseable_dict",
        '```json\n{"answer": [1, 2, 3]}\n```',
        "",
        False,
        "none",
        1,
        ("non_python_only",),
    ),
    Case(
        "python_repl_tag_not_code",
        "```pycon\n>>> add(1, 2)\n3\n```",
        "",
        False,
        "none",
        1,
        ("non_python_only",),
    ),
    # --- reasoning ------------------------------------------------------------------
    Case(
        "think_block_removed",
        "<think>\nMaybe:\n```python\ndef add(a, b):\n    return a - b\n```\nNo, plus.\n</think>\n\n"
        f"{ADD_BLOCK}",
        ADD,
        True,
        "fence:python",
        1,
        ("think_removed",),
    ),
    Case(
        "unclosed_leading_think",
        "<think>\nLet me write it:\n```python\ndef add(a, b):\n    return a + b\n```\nAnd then",
        "",
        False,
        "none",
        0,
        ("think_removed", "unclosed_think"),
    ),
    Case(
        "orphan_think_close_from_template",
        f"The user wants addition.\n```python\nadd = None\n```\n</think>\n\n{ADD_BLOCK}",
        ADD,
        True,
        "fence:python",
        1,
        ("think_removed",),
    ),
    Case(
        "think_close_inside_code_string_kept",
        '```python\ndef answer(text):\n    return text.split("</think>")[-1]\n```',
        'def answer(text):\n    return text.split("</think>")[-1]',
        True,
        "fence:python",
        1,
    ),
    Case(
        "thinking_tag_variant",
        f"<thinking>plan</thinking>\n{ADD_BLOCK}",
        ADD,
        True,
        "fence:python",
        1,
        ("think_removed",),
    ),
    Case(
        "think_then_bare_code",
        f"<think>\nsimple\n</think>\n\n{ADD}\n",
        ADD,
        True,
        "unfenced",
        0,
        ("think_removed",),
    ),
    # --- line endings, tabs, non-ASCII ---------------------------------------------
    Case(
        "crlf_line_endings",
        "Solution:\r\n\r\n```python\r\ndef add(a, b):\r\n    return a + b\r\n```\r\n",
        ADD,
        True,
        "fence:python",
        1,
        ("crlf",),
    ),
    Case(
        "lone_cr_line_endings",
        "```python\rdef add(a, b):\r    return a + b\r```",
        ADD,
        True,
        "fence:python",
        1,
        ("crlf",),
    ),
    Case(
        "tabs_in_code",
        "```python\nclass Box:\n\tdef __init__(self, v):\n\t\tself.v = v\n```",
        "class Box:\n\tdef __init__(self, v):\n\t\tself.v = v",
        True,
        "fence:python",
        1,
    ),
    Case(
        "non_ascii_identifiers_and_strings",
        "Вот решение 🙂:\n\n```python\ndef приветствие(имя):\n    # 挨拶を返す\n"
        '    return f"Привет, {имя}! 👋"\n```\n\nГотово — ✓.',
        'def приветствие(имя):\n    # 挨拶を返す\n    return f"Привет, {имя}! 👋"',
        True,
        "fence:python",
        1,
    ),
    Case(
        "non_ascii_span_byte_offsets",
        "Résumé — voilà la fonction 🚀 :\n\ndef naïve(x):\n    return x * 2  # é→ü\n\n"
        "Elle double la valeur… ça marche ✓",
        "def naïve(x):\n    return x * 2  # é→ü",
        True,
        "span",
        0,
    ),
    Case(
        "bom_at_start",
        f"\ufeff{ADD_BLOCK}",
        ADD,
        True,
        "fence:python",
        1,
    ),
    # --- no fences ------------------------------------------------------------------
    Case("bare_code", f"{ADD}\n", ADD, True, "unfenced", 0),
    Case(
        "bare_stdin_program_keeps_main_guard",
        STDIN_PROGRAM + "\n",
        STDIN_PROGRAM,
        True,
        "unfenced",
        0,
    ),
    Case(
        "bare_code_between_prose",
        "Sure! Here is a solution.\n\nimport math\n\n\ndef circle(r):\n"
        "    return math.pi * r * r\n\n"
        "This function computes the area.\nIt runs in O(1).",
        "import math\n\n\ndef circle(r):\n    return math.pi * r * r",
        True,
        "span",
        0,
    ),
    Case(
        "bare_program_with_trailing_explanation",
        "n = int(input())\nprint(n * 2)\n\nThe program reads n and prints twice its value.",
        "n = int(input())\nprint(n * 2)",
        True,
        "span",
        0,
    ),
    Case(
        "span_drops_stray_prose_word",
        "Solution\n\ndef add(a, b):\n    return a + b\n\nExplanation: it adds the numbers, easy.",
        ADD,
        True,
        "span",
        0,
    ),
    Case(
        "inline_triple_backticks_not_fence",
        "Wrap code in ```python``` fences, like this one-liner.",
        "",
        False,
        "none",
        0,
    ),
    # --- no code at all -------------------------------------------------------------
    Case(
        "prose_only",
        "I cannot solve this problem without more information about the input format.",
        "",
        False,
        "none",
        0,
    ),
    Case("single_word_prose", "Yes", "", False, "none", 0),
    Case("annotation_like_prose", "Answer: 42\nComplexity: O(n)", "", False, "none", 0),
    Case("empty_response", "", "", False, "none", 0),
    Case("whitespace_only", " \n\t\n", "", False, "none", 0),
    Case(
        "empty_python_block",
        "```python\n```",
        "",
        False,
        "none",
        1,
        ("empty_block",),
    ),
    Case(
        "invalid_only_block",
        "```python\nthis is not python at all\n```",
        "this is not python at all",
        False,
        "fence:python",
        1,
    ),
    Case(
        "nul_byte_in_code",
        "```python\nx = 1\0\n```",
        "x = 1\0",
        False,
        "fence:python",
        1,
    ),
]


# ------------------------------------------------------------ adversarial responses
# Shapes that made extraction quadratic (or could): each builder returns about ``n``
# characters. Used by tests/test_extract.py (1 MB in well under a second) and
# benchmarks/extract.py (time per MB, before and after).


def _repeat(unit: str, n: int) -> str:
    return unit * max(1, n // len(unit))


def _numbered(template: str, n: int) -> str:
    out, size, i = [], 0, 0
    while size < n:
        out.append(template.format(i=i))
        size += len(out[-1])
        i += 1
    return "".join(out)


ADVERSARIAL = {
    # many broken fenced blocks, all alike (a model looping) or all different
    "broken_fences": lambda n: _repeat("```python\ndef f(:\n```\n", n),
    "distinct_broken_fences": lambda n: _numbered("```python\ndef f{i}(:\n```\n", n),
    # only opening fences: one unclosed block holding everything
    "unclosed_fences": lambda n: _repeat("```python\nx = (\n", n),
    # thousands of ``` lines, and lines of 3 to 40 backticks (nested, unbalanced)
    "fence_lines": lambda n: _repeat("```\n", n),
    "backtick_lines": lambda n: "".join("`" * (3 + k % 38) + "\n" for k in range(n // 22)),
    # one huge line of backticks; a long run of fence-like text
    "backtick_run": lambda n: "`" * n,
    "tilde_fence_pairs": lambda n: _repeat("~~~~\n~~~\n", n) + f"```python\n{ADD}\n```",
    # reasoning markers: thousands of think blocks, or of bare closing tags between fences
    "think_blocks": lambda n: _repeat("<think>x</think>", n) + f"\n{ADD_BLOCK}",
    "think_closes": lambda n: _repeat("</think>\n```\n", n) + ADD,
    "crlf_broken_fences": lambda n: _repeat("```python\r\ndef f(:\r\n```\r\n", n),
    # blocks that define and call each other's functions (usage detection)
    "calling_blocks": lambda n: _numbered(
        "```python\ndef f{i}():\n    return f{i}0() + 1\n```\n", n
    ),
    # fences inside triple-quoted strings: each block is re-read to a later fence
    "fences_in_strings": lambda n: _repeat("```python\ns = '''\n```\nx = (\n```\n'''\n```\n", n),
}
