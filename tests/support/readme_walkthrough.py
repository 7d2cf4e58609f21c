"""The README's local walkthrough as runnable commands, so tests execute the README itself.

The section "Publish an event and see it arrive" holds three ``sh`` blocks (terminal 1:
the stack, terminal 2: a receiver, terminal 3: create a webhook and publish) and one
block of what terminal 2 prints. ``make run`` is replaced by its recipe in the Makefile
(the install step before it is what the test environment already did), and the
placeholders by what the running stack printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Publish an event and see it arrive (local walkthrough)"
# What the reader types in, and where the test finds the value.
KEY_PLACEHOLDER = "hl_..."
KAFKA_PORT_PLACEHOLDER = "<kafka port>"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


class WalkthroughError(AssertionError):
    """The README or Makefile no longer has the shape the walkthrough test runs."""


@dataclass(frozen=True)
class Walkthrough:
    """The walkthrough's blocks, in README order."""

    stack: str
    receiver: str
    client: str
    expected_output: str


def section(readme: str, heading: str = SECTION) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    lines = readme.splitlines(keepends=True)
    try:
        start = next(n for n, line in enumerate(lines) if line.rstrip("\n") == heading)
    except StopIteration:
        raise WalkthroughError(f"README has no section {heading!r}") from None
    level = len(heading.split(" ", 1)[0])
    in_fence = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        in_fence ^= line.startswith("```")
        # `# comment` lines inside sh blocks are not headings
        if not in_fence and re.match(rf"#{{1,{level}}} ", line):
            return "".join(lines[start + 1 : end])
    return "".join(lines[start + 1 :])


def parse(readme: str, makefile: str) -> Walkthrough:
    """The walkthrough of ``readme``, with ``make run`` expanded from ``makefile``."""
    blocks = _FENCE.findall(section(readme))
    shells = [text for lang, text in blocks if lang == "sh"]
    outputs = [text for lang, text in blocks if lang == ""]
    if len(shells) != 3 or len(outputs) != 1:
        raise WalkthroughError(
            f"expected 3 sh blocks and 1 output block, found {len(shells)} and {len(outputs)}"
        )
    if "make run" not in shells[0]:
        raise WalkthroughError("terminal 1 no longer runs `make run`")
    stack = shells[0].replace("make run", make_run_recipe(makefile))
    return Walkthrough(stack, shells[1], shells[2], outputs[0])


def make_run_recipe(makefile: str) -> str:
    """The command of the Makefile's ``run`` target, its variables expanded."""
    variables = dict(re.findall(r"^(\w+) :?= (.+)$", makefile, re.MULTILINE))
    match = re.search(r"^run:.*\n\t(.+)$", makefile, re.MULTILINE)
    if match is None:
        raise WalkthroughError("the Makefile has no one-line `run` recipe")
    recipe = match.group(1)
    while (ref := re.search(r"\$\((\w+)\)", recipe)) is not None:
        if ref.group(1) not in variables:
            raise WalkthroughError(f"the run recipe uses an unknown variable {ref.group(0)}")
        recipe = recipe.replace(ref.group(0), variables[ref.group(1)])
    return recipe


def fill_in(block: str, api_key: str, kafka: str) -> str:
    """``block`` with the values the running stack printed in place of the placeholders.

    The Kafka port is optional: the commands find it in ``.hooklane/env``.
    """
    if KEY_PLACEHOLDER not in block:
        raise WalkthroughError(f"the block no longer has the placeholder {KEY_PLACEHOLDER!r}")
    return block.replace(KEY_PLACEHOLDER, api_key).replace(
        KAFKA_PORT_PLACEHOLDER, kafka.rsplit(":", 1)[1]
    )


def banner_value(banner: str, label: str) -> str:
    """The value after ``label:`` in the ``Hooklane is up.`` banner."""
    match = re.search(rf"^\s*{re.escape(label)}:\s+(\S+)", banner, re.MULTILINE)
    if match is None:
        raise WalkthroughError(f"the banner has no {label!r} line:\n{banner}")
    return match.group(1)


def load() -> Walkthrough:
    """The walkthrough of this checkout's README and Makefile."""
    return parse((ROOT / "README.md").read_text("utf-8"), (ROOT / "Makefile").read_text("utf-8"))
