"""Training text for the tiny BPE tokenizer, the model card's example among it.

Kept inline (not read from the stdlib or site-packages) so the tokenizer, and hence every
tiny model's scores, are identical on every machine and Python version.
"""

from __future__ import annotations

# The model card's example, with the 4-space indentation it was computed on (the copy of the card in
# shared/seeds lost it). The real 1.7B model scores these about 12.51 and -0.47 in fp32.
MODEL_CARD_QUESTION = """\
Given an integer array nums and an integer k, return the total number of continuous subarrays whose sum equals k.
A subarray is a contiguous part of the array.
For example:
```
Input:
nums = [1, 1, 1], k = 2

Output:
2
```
"""

MODEL_CARD_PROGRAM_CORRECT = """\
from collections import defaultdict

def subarraySum(nums, k):
    prefix = 0
    count = 0
    freq = defaultdict(int)
    freq[0] = 1  # Important: subarray starting from index 0

    for num in nums:
        prefix += num

        if prefix - k in freq:
            count += freq[prefix - k]

        freq[prefix] += 1

    return count
"""

MODEL_CARD_PROGRAM_WRONG = """\
def subarraySum(nums, k):
    left = 0
    curr_sum = 0
    count = 0

    for right in range(len(nums)):
        curr_sum += nums[right]

        while curr_sum > k and left <= right:
            curr_sum -= nums[left]
            left += 1

        if curr_sum == k:
            count += 1

    return count
"""

BUILTIN_CORPUS: tuple[str, ...] = (
    MODEL_CARD_QUESTION,
    MODEL_CARD_PROGRAM_CORRECT,
    MODEL_CARD_PROGRAM_WRONG,
    '''\
import sys
from typing import List, Optional


def two_sum(nums: List[int], target: int) -> List[int]:
    """Return the indices of the two numbers that add up to target."""
    seen = {}
    for i, value in enumerate(nums):
        if target - value in seen:
            return [seen[target - value], i]
        seen[value] = i
    return []


class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next


def reverse_list(head: Optional[ListNode]) -> Optional[ListNode]:
    prev = None
    while head is not None:
        head.next, prev, head = prev, head, head.next
    return prev


def main() -> None:
    data = sys.stdin.read().split()
    n = int(data[0])
    values = list(map(int, data[1 : n + 1]))
    best = max(values) if values else 0
    print(best)


if __name__ == "__main__":
    main()
''',
    """\
def longest_common_prefix(strs):
    if not strs:
        return ""
    prefix = strs[0]
    for s in strs[1:]:
        while not s.startswith(prefix):
            prefix = prefix[:-1]
    return prefix

def binary_search(arr, x):
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == x:
            return mid
        elif arr[mid] < x:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1

def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

def is_palindrome(s: str) -> bool:
    cleaned = [c.lower() for c in s if c.isalnum()]
    return cleaned == cleaned[::-1]

def merge_intervals(intervals):
    intervals.sort(key=lambda it: it[0])
    merged = []
    for start, end in intervals:
        if merged and merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged

def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

try:
    result = int(input().strip())
except ValueError as exc:
    raise SystemExit(f"bad input: {exc!r}")
assert result >= 0, "result must be non-negative"
""",
    """\
#include <bits/stdc++.h>
using namespace std;

int main() {
    ios::sync_with_stdio(false);
    cin.tie(nullptr);
    int n;
    cin >> n;
    vector<long long> a(n);
    for (int i = 0; i < n; ++i) cin >> a[i];
    sort(a.begin(), a.end());
    cout << a.back() - a.front() << "\\n";
    return 0;
}

function solve(input) {
  const lines = input.trim().split("\\n");
  return lines.map((line) => Number(line) * 2).join(" ");
}
""",
    """\
You are given a string s consisting of lowercase English letters. Find the length of the longest
substring without repeating characters. The answer must be printed on a single line.

Constraints:
- 1 <= n <= 2 * 10^5
- 0 <= a[i] <= 10^9
- The sum of n over all test cases does not exceed 10^6.

Input Format
The first line contains an integer t, the number of test cases. Each test case consists of two
lines: the first contains n and k, the second contains n integers separated by spaces.

Output Format
For each test case, print the minimum number of operations required, or -1 if it is impossible.

Example 1:
Input: s = "abcabcbb"
Output: 3
Explanation: The answer is "abc", with the length of 3.

Note: a subsequence is obtained by deleting some (possibly zero) elements without changing the
order of the remaining elements. Two arrays are different if they differ at any position.
""",
    """\
The reward model reads a question and a candidate program, then returns a single score. Higher
scores mean the program is more likely to be correct. We sort the candidates by score and keep the
best one for each problem. It's fast, it doesn't execute code, and they're easy to batch; we'll
compare it with unit tests later. I'm sure you've seen this before: the model can't run the code,
so it must judge the program by reading it.

{"id": "p-0001", "question": "Sum two numbers.", "candidates": ["print(1 + 2)", "print(3)"]}
$ codescaler score --input problems.jsonl --output scores.parquet --batch-size 16
Température, café, naïve, déjà vu, Straße, Zürich, São Paulo, mañana.
数组中的最大值 — 返回下标。 配列の最大値を求めよ。 최댓값을 구하시오. Ответ: 42.
Emoji and symbols: ✅ ❌ → ≤ ≥ ≠ ∑ π λ 😀 🚀
Windows line endings:\r\nline one\r\nline two\r\n\tTabbed\tcolumns\t1\t2
""",
)
