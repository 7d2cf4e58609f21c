"""The README walkthrough parser: the README and Makefile still have the runnable shape.

The walkthrough itself runs in tests/test_fresh_machine.py; these tests fail fast, and
without root, when an edit breaks its shape.
"""

from __future__ import annotations

import pytest

from tests.support.readme_walkthrough import (
    KAFKA_PORT_PLACEHOLDER,
    KEY_PLACEHOLDER,
    WalkthroughError,
    banner_value,
    fill_in,
    load,
    make_run_recipe,
    section,
)

BANNER = """
Hooklane is up.
  API:          http://127.0.0.1:8080
  Dev API key:  hl_abc
  Kafka:        127.0.0.1:41235
  Postgres:     postgresql://postgres:@/hooklane?host=/x/.hooklane/pgdata  (embedded)
Press Ctrl-C to stop.
"""


def test_this_readme_has_a_runnable_walkthrough() -> None:
    """The walkthrough's blocks parse, `make run` expands, and the placeholders are there."""
    steps = load()
    assert "make run" not in steps.stack
    assert ".venv/bin/hooklane up" in steps.stack
    assert "HOOKLANE_ALLOW_PRIVATE_TARGETS=true" in steps.stack
    assert "port=9911" in steps.receiver
    filled = fill_in(steps.client, "hl_real", "127.0.0.1:40000")
    assert KEY_PLACEHOLDER not in filled and KAFKA_PORT_PLACEHOLDER not in filled
    assert "KEY=hl_real" in filled
    # the second terminal needs no address: `.hooklane/env` has them
    assert "HOOKLANE_KAFKA_BOOTSTRAP_SERVERS" not in filled


@pytest.mark.parametrize(
    ("makefile", "recipe"),
    [
        (
            "VENV := .venv\nBIN := $(VENV)/bin\n\nrun: install\n\t$(BIN)/hooklane up\n",
            ".venv/bin/hooklane up",
        ),
        ("run:\n\thooklane up --flag\n", "hooklane up --flag"),
    ],
)
def test_make_run_recipe_expands_variables(makefile: str, recipe: str) -> None:
    """The run target's command is read from the Makefile with its variables expanded."""
    assert make_run_recipe(makefile) == recipe


@pytest.mark.parametrize(
    "makefile",
    ["test:\n\tpytest\n", "run: install\n\t$(NOWHERE)/hooklane up\n"],
)
def test_make_run_recipe_refuses_what_it_cannot_expand(makefile: str) -> None:
    """A missing run target or an unknown variable is an error, not a wrong command."""
    with pytest.raises(WalkthroughError):
        make_run_recipe(makefile)


def test_section_ends_at_the_next_heading_not_at_shell_comments() -> None:
    """`# comment` lines inside fenced blocks do not end the section."""
    readme = "## A\n### Walk\n```sh\n# terminal 2\necho hi\n```\ntext\n### Next\nafter\n"
    assert section(readme, "### Walk") == "```sh\n# terminal 2\necho hi\n```\ntext\n"
    with pytest.raises(WalkthroughError):
        section(readme, "### Missing")


def test_fill_in_needs_the_key_placeholder() -> None:
    """A block that lost the key placeholder is reported (the README changed shape)."""
    with pytest.raises(WalkthroughError, match="hl_"):
        fill_in(f"port {KAFKA_PORT_PLACEHOLDER}\n", "hl_x", "127.0.0.1:1")


@pytest.mark.parametrize(
    ("label", "value"),
    [("API", "http://127.0.0.1:8080"), ("Dev API key", "hl_abc"), ("Kafka", "127.0.0.1:41235")],
)
def test_banner_values(label: str, value: str) -> None:
    """Values are read from the `hooklane up` banner by label."""
    assert banner_value(BANNER, label) == value
