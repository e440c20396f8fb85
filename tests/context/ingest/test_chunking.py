"""The chunkers: headings, definitions, paragraphs; bounded, lossless, ordered, with line ranges.

hypothesis is not a dependency, so the property checks run over a parametrized corpus plus a
seeded random generator of documents (many sizes and shapes, reproducible).
"""

from __future__ import annotations

import random

import pytest

from trellis.context.ingest.chunking import (
    Chunk,
    FileKind,
    Kind,
    chunk_code,
    chunk_document,
    chunk_markdown,
    chunk_text,
    detect_kind,
    split_bounded,
)

MARKDOWN = """\
Intro before any heading.

# Guide

Welcome to the guide.

## Install

Run this:

```bash
# not a heading: inside a fence
pip install trellis
```

## Use

### Basics

Do the basic thing.

Setext Section
==============

Setext body.

Sub Setext
----------

Deeper body.

# Reference
## Empty parent
### Child
Child body.
"""

PYTHON = '''\
#!/usr/bin/env python
"""Module docstring."""

import os

CONSTANT = 1


# A comment that belongs to the function below.
@decorator
@other.decorator(arg=1)
def decorated(a, b):
    """Docstring."""
    return a + b


class Outer:
    """Outer docstring."""

    class Inner:
        def method(self):
            return 1

    def outer_method(self):
        return 2


VALUE = decorated(1, 2)
if __name__ == "__main__":
    print(VALUE)


async def coroutine():
    await something()
'''

GO = """\
package main

import "fmt"

// Hello prints a greeting.
// It has two comment lines.
func Hello() {
\tfmt.Println("hello")
}

const A = 1
const B = 2

type Point struct {
\tX, Y int
}

func (p *Point) Norm() int {
\treturn p.X*p.X + p.Y*p.Y
}
"""

TYPESCRIPT = """\
import { x } from "./x";

/** Adds. */
export function add(a: number, b: number): number {
  return a + b;
}

export default class Widget {
  render() {}
}

export const answer = 42;

interface Shape {
  area(): number;
}
"""

RUST = """\
use std::fmt;

/// A point.
#[derive(Debug)]
pub struct Point {
    x: i32,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.x)
    }
}

pub async fn run() {}
"""

C = """\
#include <stdio.h>

/* Adds two numbers. */
static int add(int a, int b) {
    return a + b;
}

struct point {
    int x;
};

int main(void)
{
    return add(1, 2);
}
"""

TEXT = """\
First paragraph, line one.
Line two.

Second paragraph.


Third paragraph after two blank lines.
"""


def joined(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def check_invariants(text: str, chunks: list[Chunk], max_chars: int) -> None:
    """Lossless, bounded, contiguous, numbered, with consistent line ranges."""
    assert joined(chunks) == text
    offset = 0
    previous_end_line = 0
    lines = text.split("\n")
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.start == offset
        assert chunk.end == offset + len(chunk.text)
        assert text[chunk.start : chunk.end] == chunk.text
        offset = chunk.end
        assert 0 < len(chunk.text) <= max_chars
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.start_line >= previous_end_line  # ordered; a hard cut may share one line
        previous_end_line = chunk.end_line
        if chunk.text.strip():
            first_char = chunk.text.strip()[0]
            last_char = chunk.text.strip()[-1]
            assert first_char in lines[chunk.start_line - 1]
            assert last_char in lines[chunk.end_line - 1]
        meta = chunk.metadata()
        assert meta["index"] == i
        assert (meta["start_line"], meta["end_line"]) == (chunk.start_line, chunk.end_line)
    assert offset == len(text)


# --- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("README.md", FileKind(Kind.MARKDOWN)),
        ("docs/Guide.MARKDOWN", FileKind(Kind.MARKDOWN)),
        ("notes.txt", FileKind(Kind.TEXT)),
        ("index.rst", FileKind(Kind.TEXT)),
        ("src/app.py", FileKind(Kind.CODE, "python")),
        ("web/app.js", FileKind(Kind.CODE, "javascript")),
        ("web/app.tsx", FileKind(Kind.CODE, "typescript")),
        ("main.go", FileKind(Kind.CODE, "go")),
        ("lib.rs", FileKind(Kind.CODE, "rust")),
        ("Main.java", FileKind(Kind.CODE, "java")),
        ("x.c", FileKind(Kind.CODE, "c")),
        ("x.h", FileKind(Kind.CODE, "c")),
        ("x.cpp", FileKind(Kind.CODE, "cpp")),
        ("tool.rb", FileKind(Kind.CODE, "ruby")),
        ("run.sh", FileKind(Kind.CODE, "shell")),
        ("windows\\path\\a.py", FileKind(Kind.CODE, "python")),
        ("Dockerfile", FileKind(Kind.CODE, "dockerfile")),
        ("image.png", None),
        ("archive.tar.gz", None),
        ("no_extension", None),
        ("", None),
    ],
)
def test_detect_kind(name: str, expected: FileKind | None) -> None:
    assert detect_kind(name) == expected


# --- markdown --------------------------------------------------------------------------------


def test_markdown_splits_along_headings_with_heading_paths() -> None:
    chunks = chunk_markdown(MARKDOWN)
    check_invariants(MARKDOWN, chunks, 2000)
    paths = [c.metadata()["heading_path"] for c in chunks]
    assert paths == [
        [],
        ["Guide"],
        ["Guide", "Install"],
        ["Guide", "Use", "Basics"],  # "## Use" has no body of its own: carried into Basics
        ["Setext Section"],
        ["Setext Section", "Sub Setext"],
        ["Reference", "Empty parent", "Child"],
    ]
    assert chunks[0].text == "Intro before any heading.\n\n"
    assert chunks[1].text.startswith("# Guide\n")
    # The fenced "# not a heading" stays inside the Install chunk.
    assert "# not a heading: inside a fence" in chunks[2].text
    assert chunks[3].text.startswith("## Use\n\n### Basics\n")
    assert chunks[6].text.startswith("# Reference\n## Empty parent\n### Child\n")


def test_markdown_line_ranges() -> None:
    chunks = chunk_markdown(MARKDOWN)
    lines = MARKDOWN.split("\n")
    by_path = {tuple(c.metadata()["heading_path"]): c for c in chunks}
    install = by_path[("Guide", "Install")]
    assert lines[install.start_line - 1] == "## Install"
    assert lines[install.end_line - 1] == "```"
    guide = by_path[("Guide",)]
    assert (guide.start_line, guide.end_line) == (3, 5)


def test_markdown_nested_levels_pop_correctly() -> None:
    text = "# A\na\n## B\nb\n### C\nc\n## D\nd\n# E\ne\n### F\nf\n"
    paths = [c.heading_path for c in chunk_markdown(text)]
    assert paths == [("A",), ("A", "B"), ("A", "B", "C"), ("A", "D"), ("E",), ("E", "F")]


def test_markdown_heading_syntax_details() -> None:
    text = "#NoSpace is text\n\n##   Closed ##\nbody\n    # indented code, not a heading\n#\nempty title\n"
    chunks = chunk_markdown(text)
    assert [c.heading_path for c in chunks] == [(), ("Closed",), ("",)]  # "#" alone: a level-1, untitled
    assert joined(chunks) == text


def test_markdown_front_matter_is_not_headings() -> None:
    text = "---\ntitle: x\n# a yaml comment\n---\n\n# Real\nbody\n"
    chunks = chunk_markdown(text)
    assert [c.heading_path for c in chunks] == [(), ("Real",)]


def test_markdown_tilde_fence_and_unclosed_fence() -> None:
    text = "# A\n~~~\n# no\n~~~\n# B\n```\n# no\nstill code\n"
    chunks = chunk_markdown(text)
    assert [c.heading_path for c in chunks] == [("A",), ("B",)]


def test_markdown_only_a_heading() -> None:
    chunks = chunk_markdown("# Lonely\n")
    assert [(c.text, c.heading_path) for c in chunks] == [("# Lonely\n", ("Lonely",))]


def test_markdown_oversized_section_splits_and_keeps_its_path() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 30 for i in range(20))
    text = f"# Top\n\n## Big\n\n{body}\n\n## After\nsmall\n"
    chunks = chunk_markdown(text, max_chars=400)
    check_invariants(text, chunks, 400)
    big = [c for c in chunks if c.heading_path == ("Top", "Big")]
    assert len(big) > 1
    assert [c.metadata()["part"] for c in big] == list(range(1, len(big) + 1))
    assert all(c.metadata()["parts"] == len(big) for c in big)
    # Paragraph boundaries first: every piece but the last ends at a blank line.
    assert all(c.text.endswith("\n\n") for c in big[:-1])
    assert chunks[-1].heading_path == ("Top", "After")
    assert "part" not in chunks[-1].metadata()


# --- code ------------------------------------------------------------------------------------


def test_python_splits_along_top_level_definitions() -> None:
    chunks = chunk_code(PYTHON, "python")
    check_invariants(PYTHON, chunks, 2000)
    assert [c.metadata()["definition"] for c in chunks] == [None, "decorated", "Outer", None, "coroutine"]
    preamble, decorated, outer, main, coroutine = chunks
    assert preamble.text.startswith("#!/usr/bin/env python\n")
    assert "import os" in preamble.text
    assert "CONSTANT = 1" in preamble.text
    # Comment, decorators and docstring belong to the function.
    assert decorated.text.startswith("# A comment that belongs to the function below.\n@decorator\n")
    assert '"""Docstring."""' in decorated.text
    assert decorated.start_line == 9
    assert decorated.end_line == 14
    # Nested classes and methods stay inside their top-level class.
    assert "class Inner:" in outer.text
    assert "def outer_method" in outer.text
    assert "class Inner" not in main.text
    assert main.text.startswith("VALUE = decorated(1, 2)\nif __name__")
    assert coroutine.text.startswith("async def coroutine():")
    assert coroutine.end_line == PYTHON.count("\n")


def test_python_syntax_error_falls_back_to_the_regex() -> None:
    text = "import x\n\ndef good():\n    return 1\n\ndef broken(:\n    pass\n\nclass K:\n    pass\n"
    chunks = chunk_code(text, "python")
    assert joined(chunks) == text
    assert [c.definition for c in chunks] == [None, "good", "broken", "K"]


def test_python_without_definitions_is_paragraphs() -> None:
    text = "import os\n\nX = 1\n\nprint(X)\n"
    chunks = chunk_code(text, "python")
    assert [c.text for c in chunks] == [text]
    assert "definition" not in chunks[0].metadata()


def test_python_oversized_class_splits_at_blank_lines_then_lines() -> None:
    methods = "\n".join(f"    def m{i}(self):\n        return {i}\n" for i in range(60))
    text = f"import os\n\n\nclass Big:\n{methods}\n\ndef after():\n    pass\n"
    chunks = chunk_code(text, "python", max_chars=300)
    check_invariants(text, chunks, 300)
    big = [c for c in chunks if c.definition == "Big"]
    assert len(big) > 3
    assert chunks[-1].definition == "after"


@pytest.mark.parametrize(
    ("source", "language", "definitions"),
    [
        (GO, "go", [None, "Hello", "A", "Point", "Norm"]),
        (TYPESCRIPT, "typescript", [None, "add", "Widget", "answer", "Shape"]),
        (RUST, "rust", [None, "Point", "fmt::Display for Point", "run"]),
        (C, "c", [None, "add", "point", "main"]),
    ],
)
def test_other_languages_split_along_definition_lines(
    source: str, language: str, definitions: list[str | None]
) -> None:
    chunks = chunk_code(source, language)
    check_invariants(source, chunks, 2000)
    assert [c.definition for c in chunks] == definitions


def test_lead_in_comments_and_attributes_belong_to_the_definition() -> None:
    go = chunk_code(GO, "go")
    assert go[1].text.startswith("// Hello prints a greeting.\n// It has two comment lines.\nfunc Hello()")
    assert go[1].start_line == 5
    # Consecutive one-line definitions stay together.
    assert go[2].text == "const A = 1\nconst B = 2\n\n"
    rust = chunk_code(RUST, "rust")
    assert rust[1].text.startswith("/// A point.\n#[derive(Debug)]\npub struct Point")
    c = chunk_code(C, "c")
    assert c[1].text.startswith("/* Adds two numbers. */\nstatic int add(")


def test_code_language_without_a_pattern_is_paragraphs() -> None:
    text = "SELECT 1;\n\nSELECT 2;\n"
    chunks = chunk_document(text, FileKind(Kind.CODE, "sql"))
    assert [c.text for c in chunks] == [text]


# --- text and bounds -------------------------------------------------------------------------


def test_text_paragraphs_are_packed_up_to_the_bound() -> None:
    chunks = chunk_text(TEXT, max_chars=50)
    check_invariants(TEXT, chunks, 50)
    assert [c.text for c in chunks] == [
        "First paragraph, line one.\nLine two.\n\n",
        "Second paragraph.\n\n\n",
        "Third paragraph after two blank lines.\n",
    ]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 2), (4, 4), (7, 7)]
    assert chunk_text(TEXT) == [chunk_text(TEXT)[0]]  # fits: one chunk
    assert len(chunk_text(TEXT)) == 1


def test_a_line_longer_than_the_bound_is_cut_hard() -> None:
    text = "short\n" + "x" * 250 + "\nend\n"
    chunks = chunk_text(text, max_chars=100)
    check_invariants(text, chunks, 100)
    assert max(len(c.text) for c in chunks) == 100
    # Cuts in one line share its number.
    assert [c.start_line for c in chunks] == [1, 2, 2, 2]


def test_split_bounded_prefers_paragraphs_then_lines() -> None:
    text = "aaaa\nbbbb\n\ncccc\ndddd\n"
    assert split_bounded(text, 12) == ["aaaa\nbbbb\n\n", "cccc\ndddd\n"]
    assert split_bounded(text, 6) == ["aaaa\n", "bbbb\n\n", "cccc\n", "dddd\n"]
    assert split_bounded(text, 3) == ["aaa", "a\n", "bbb", "b\n\n", "ccc", "c\n", "ddd", "d\n"]
    assert split_bounded("", 5) == []
    with pytest.raises(ValueError, match="at least 1"):
        split_bounded("x", 0)


@pytest.mark.parametrize("text", ["", " ", "\n\n\n", " \t\n  \n"])
def test_blank_documents_have_no_chunks(text: str) -> None:
    for kind in (FileKind(Kind.MARKDOWN), FileKind(Kind.TEXT), FileKind(Kind.CODE, "python")):
        assert chunk_document(text, kind) == []


def test_chunking_is_stable() -> None:
    for kind, text in (
        (FileKind(Kind.MARKDOWN), MARKDOWN),
        (FileKind(Kind.CODE, "python"), PYTHON),
        (FileKind(Kind.TEXT), TEXT * 20),
    ):
        assert chunk_document(text, kind, 120) == chunk_document(text, kind, 120)


def test_crlf_and_no_trailing_newline() -> None:
    text = "# A\r\nbody a\r\n\r\n# B\r\nbody b"
    chunks = chunk_markdown(text)
    assert joined(chunks) == text
    assert [c.heading_path for c in chunks] == [("A",), ("B",)]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 2), (4, 5)]


# --- property-style checks -------------------------------------------------------------------

_WORDS = ["alpha", "beta", "gamma", "delta", "x" * 80, "# heading", "def f():", "    return 1", "```", "", " "]


def _random_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 60)):
        roll = rng.random()
        if roll < 0.15:
            lines.append("#" * rng.randint(1, 4) + " " + rng.choice(_WORDS))
        elif roll < 0.25:
            lines.append("")
        elif roll < 0.3:
            lines.append("=" * rng.randint(1, 5))
        elif roll < 0.35:
            lines.append(rng.choice(["def g(x):", "class C:", "@dec", "async def h():"]))
        else:
            lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 12))))
    separator = rng.choice(["\n", "\r\n"])
    return separator.join(lines) + rng.choice(["", "\n", "\n\n"])


@pytest.mark.parametrize("seed", range(40))
def test_random_documents_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        text = _random_document(rng)
        max_chars = rng.choice([3, 7, 40, 120, 2000])
        for kind in (
            FileKind(Kind.MARKDOWN),
            FileKind(Kind.TEXT),
            FileKind(Kind.CODE, "python"),
            FileKind(Kind.CODE, "go"),
            FileKind(Kind.CODE, "c"),
        ):
            chunks = chunk_document(text, kind, max_chars)
            if not text.strip():
                assert chunks == []
                continue
            check_invariants(text, chunks, max_chars)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (MARKDOWN, FileKind(Kind.MARKDOWN)),
        (PYTHON, FileKind(Kind.CODE, "python")),
        (GO, FileKind(Kind.CODE, "go")),
        (TYPESCRIPT, FileKind(Kind.CODE, "typescript")),
        (RUST, FileKind(Kind.CODE, "rust")),
        (C, FileKind(Kind.CODE, "c")),
        (TEXT, FileKind(Kind.TEXT)),
    ],
)
@pytest.mark.parametrize("max_chars", [1, 10, 33, 100, 2000])
def test_corpus_keeps_every_invariant_at_every_bound(text: str, kind: FileKind, max_chars: int) -> None:
    check_invariants(text, chunk_document(text, kind, max_chars), max_chars)
