"""Splitting documents into chunks for retrieval: pure functions, no I/O.

Three splitters, chosen by the file's kind (``detect_kind``, from the file name):

- **markdown**: one section per heading (ATX ``#`` headings and setext ``===``/``---`` underlines;
  headings inside fenced code blocks and YAML front matter are not headings). Each chunk carries
  its heading path, e.g. ``["Guide", "Install"]``. A heading with no body of its own (``# Guide``
  directly followed by ``## Install``) is carried into the next section rather than becoming a
  chunk of one line.
- **code**: one section per top-level definition. Python is parsed with ``ast``: functions and
  classes (``async`` too) with their decorators, docstrings and the comment lines directly above
  them; the top-level statements between definitions (imports, constants, ``if __name__ ...``)
  form sections of their own. Other languages use a regex per language (``_DEFINITIONS``) that
  matches an *unindented* line opening a definition (``func``/``type`` in Go, ``fn``/``struct``/
  ``impl`` in Rust, ``function``/``class``/``const`` in JS/TS, a function header in C, ...); the
  comment, attribute and annotation lines directly above it belong to it, and consecutive
  definition lines (``const A = 1`` / ``const B = 2``) stay together. A language without a
  pattern, a file where the pattern finds nothing, or Python that does not parse, falls back to
  plain-text splitting.
- **text**: paragraphs (separated by blank lines), packed greedily into chunks of at most
  ``max_chars``.

Guarantees, for every kind and every input:

- **Lossless**: chunks are contiguous slices of the text, in order, with nothing between them:
  ``"".join(c.text for c in chunks) == text``. There is no separator to add back; blank lines
  between sections stay at the end of the section before them.
- **Bounded**: ``len(c.text) <= max_chars``. A section that is too long is split further at
  paragraph boundaries, then at line boundaries, then (a single line longer than ``max_chars``)
  at every ``max_chars`` characters; the pieces are packed greedily back up to the bound. The
  pieces of one section keep its label and say ``part``/``parts``.
- **Stable**: the same text and ``max_chars`` always give the same chunks, numbered from 0.
- **Line ranges**: ``start_line``/``end_line`` (1-based, inclusive) are the lines holding the
  chunk's first and last non-whitespace character (a whitespace-only chunk, possible only when a
  run of whitespace is longer than ``max_chars``, spans its own lines). Lines end at ``\\n``.
- A text that is empty or only whitespace has no chunks.
"""

from __future__ import annotations

import ast
import bisect
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

DEFAULT_MAX_CHARS = 2000


class Kind(StrEnum):
    MARKDOWN = "markdown"
    TEXT = "text"
    CODE = "code"


@dataclass(frozen=True)
class FileKind:
    kind: Kind
    language: str | None = None


_MARKDOWN_EXTENSIONS = {".md", ".markdown", ".mdown", ".mkd"}
_TEXT_EXTENSIONS = {".txt", ".text", ".rst", ".adoc"}
_CODE_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".cs": "csharp",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".lua": "lua",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".sql": "sql",
    ".css": "css",
    ".scss": "css",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
}
_CODE_FILENAMES = {"dockerfile": "dockerfile", "makefile": "make"}


def detect_kind(filename: str) -> FileKind | None:
    """The kind of a file from its name (case-insensitive); None when unsupported."""
    name = PurePosixPath(filename.replace("\\", "/")).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _MARKDOWN_EXTENSIONS:
        return FileKind(Kind.MARKDOWN)
    if suffix in _TEXT_EXTENSIONS:
        return FileKind(Kind.TEXT)
    if suffix in _CODE_EXTENSIONS:
        return FileKind(Kind.CODE, _CODE_EXTENSIONS[suffix])
    if name in _CODE_FILENAMES:
        return FileKind(Kind.CODE, _CODE_FILENAMES[name])
    return None


def supported_names() -> list[str]:
    """The extensions (and whole file names) ``detect_kind`` knows, for error messages."""
    return sorted([*_MARKDOWN_EXTENSIONS, *_TEXT_EXTENSIONS, *_CODE_EXTENSIONS]) + sorted(
        n.capitalize() for n in _CODE_FILENAMES
    )


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offsets into the document: text == document[start:end]
    end: int
    start_line: int
    end_line: int
    heading_path: tuple[str, ...] | None = None  # markdown
    definition: str | None = None  # code: the definition's name; None for the code between definitions
    part: int = 1
    parts: int = 1
    is_code: bool = False

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"index": self.index, "start_line": self.start_line, "end_line": self.end_line}
        if self.heading_path is not None:
            meta["heading_path"] = list(self.heading_path)
        if self.is_code:
            meta["definition"] = self.definition
        if self.parts > 1:
            meta["part"] = self.part
            meta["parts"] = self.parts
        return meta


@dataclass
class _Section:
    start: int
    end: int
    heading_path: tuple[str, ...] | None = None
    definition: str | None = None
    # A section made only of its heading: carried into the next one.
    heading_only: bool = False
    # Pack with neighbours up to the bound (plain text) instead of standing alone.
    packable: bool = False


class _Lines:
    """Line offsets of a text: lines end at ``\\n`` (kept in the line)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0]
        for match in re.finditer("\n", text):
            if match.end() < len(text):
                self.starts.append(match.end())

    def __len__(self) -> int:
        return len(self.starts) if self.text else 0

    def offset(self, line: int) -> int:
        """Offset of 0-based ``line``; ``len(text)`` past the last line."""
        return self.starts[line] if line < len(self.starts) else len(self.text)

    def line(self, i: int) -> str:
        """0-based line ``i`` without its newline."""
        return self.text[self.offset(i) : self.offset(i + 1)].rstrip("\n")

    def number(self, offset: int) -> int:
        """1-based line number of the character at ``offset``."""
        return bisect.bisect_right(self.starts, offset)


# --- public entry points ---------------------------------------------------------------------


def chunk_document(text: str, kind: FileKind, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    if kind.kind is Kind.MARKDOWN:
        return chunk_markdown(text, max_chars)
    if kind.kind is Kind.CODE:
        return chunk_code(text, kind.language, max_chars)
    return chunk_text(text, max_chars)


def chunk_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    return _finish(text, [_Section(0, len(text), packable=True)], max_chars)


def chunk_markdown(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    return _finish(text, _markdown_sections(text), max_chars)


def chunk_code(text: str, language: str | None, max_chars: int = DEFAULT_MAX_CHARS) -> list[Chunk]:
    sections: list[_Section] | None = None
    if language == "python":
        sections = _python_sections(text)
    if sections is None and language in _DEFINITIONS:
        sections = _regex_sections(text, language)
    if sections is None:
        return chunk_text(text, max_chars)
    return _finish(text, sections, max_chars, is_code=True)


# --- markdown --------------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+$")
_SETEXT = re.compile(r" {0,3}(=+|-{2,})[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_NOT_SETEXT_TEXT = re.compile(r"(?: {4}|\t| {0,3}(?:[>*+-]|\d+[.)])(?:[ \t]|$))")


def _markdown_sections(text: str) -> list[_Section]:
    lines = _Lines(text)
    n = len(lines)
    # (line index, number of lines the heading occupies, level, title)
    headings: list[tuple[int, int, int, str]] = []
    i = 0
    if n and lines.line(0).rstrip() == "---":  # YAML front matter: no headings inside
        for j in range(1, n):
            if lines.line(j).rstrip() in ("---", "..."):
                i = j + 1
                break
    fence: str | None = None
    while i < n:
        line = lines.line(i)
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]} and len(line) - len(line.lstrip(" ")) < 4:
                fence = None
            i += 1
            continue
        opened = _FENCE.match(line)
        if opened:
            fence = opened.group(1)
            i += 1
            continue
        atx = _ATX.match(line)
        if atx:
            title = _ATX_CLOSING.sub("", (atx.group(2) or "").strip()).strip()
            headings.append((i, 1, len(atx.group(1)), title))
            i += 1
            continue
        if (
            i + 1 < n
            and line.strip()
            and not _NOT_SETEXT_TEXT.match(line)
            and (i == 0 or not lines.line(i - 1).strip())
            and _SETEXT.match(lines.line(i + 1))
        ):
            level = 1 if lines.line(i + 1).strip().startswith("=") else 2
            headings.append((i, 2, level, line.strip()))
            i += 2
            continue
        i += 1

    sections: list[_Section] = []
    first = headings[0][0] if headings else n
    if first > 0:
        sections.append(_Section(0, lines.offset(first), heading_path=()))
    stack: list[tuple[int, str]] = []
    for k, (line_no, height, level, title) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end_line = headings[k + 1][0] if k + 1 < len(headings) else n
        body = text[lines.offset(line_no + height) : lines.offset(end_line)]
        sections.append(
            _Section(
                lines.offset(line_no),
                lines.offset(end_line),
                heading_path=tuple(t for _, t in stack),
                heading_only=not body.strip(),
            )
        )
    return sections


# --- code ------------------------------------------------------------------------------------

_DefPattern = re.Pattern[str]
_BRACE_LEAD_IN = re.compile(r"[ \t]*(?://|/\*|\*|@|#!?\[)")
_HASH_LEAD_IN = re.compile(r"[ \t]*#")

_JS = re.compile(
    r"(?:export[ \t]+(?:default[ \t]+)?)?(?:declare[ \t]+)?(?:async[ \t]+)?(?:abstract[ \t]+)?"
    r"(?:function\b\*?|class\b|interface\b|type\b|enum\b|namespace\b|const\b|let\b|var\b)"
    r"[ \t*]*([A-Za-z_$][\w$]*)?"
)
_C = re.compile(
    r"(?:template\b|(?:typedef[ \t]+)?(?:struct|union|enum|class|namespace)\b[ \t]*([A-Za-z_]\w*)?"
    r"|(?!(?:if|for|while|switch|return|else|do|case|goto)\b)[A-Za-z_][\w \t*&:<>,~]*?[ \t*&]~?"
    r"([A-Za-z_][\w:~]*)[ \t]*\([^;]*$)"
)
_JVM = re.compile(
    r"(?:(?:public|private|protected|internal|abstract|final|sealed|static|open|data|partial|inline|"
    r"suspend|override|case|implicit|lazy)[ \t]+)*"
    r"(?:class|interface|enum|record|object|trait|fun|def|val|var|struct|namespace|@interface)[ \t]+"
    r"([A-Za-z_]\w*)"
)

# language -> (an unindented line that opens a top-level definition, the lines that lead into one:
# comments, attributes, annotations). The first non-empty group of the match is the name.
_DEFINITIONS: dict[str, tuple[_DefPattern, _DefPattern]] = {
    "python": (re.compile(r"(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)"), re.compile(r"[ \t]*[#@]")),
    "javascript": (_JS, _BRACE_LEAD_IN),
    "typescript": (_JS, _BRACE_LEAD_IN),
    "go": (re.compile(r"(?:func|type|var|const)\b[ \t]*(?:\([^)]*\)[ \t]*)?([A-Za-z_]\w*)?"), _BRACE_LEAD_IN),
    "rust": (
        re.compile(
            r"(?:unsafe[ \t]+)?impl\b(?:[ \t]*<[^>]*>)?[ \t]+([^{]*?)[ \t]*(?:\{.*)?$"  # the name: "Trait for Type"
            r"|(?:pub(?:\([^)]*\))?[ \t]+)?(?:(?:async|const|unsafe|default)[ \t]+)*"
            r"(?:extern[ \t]+(?:\"[^\"]*\"[ \t]+)?)?"
            r"(?:fn|struct|enum|trait|mod|type|const|static|union|macro_rules!)\b[ \t]*([A-Za-z_]\w*)?"
        ),
        _BRACE_LEAD_IN,
    ),
    "java": (_JVM, _BRACE_LEAD_IN),
    "kotlin": (_JVM, _BRACE_LEAD_IN),
    "scala": (_JVM, _BRACE_LEAD_IN),
    "csharp": (_JVM, _BRACE_LEAD_IN),
    "swift": (
        re.compile(
            r"(?:(?:public|private|fileprivate|internal|open|final|static)[ \t]+)*"
            r"(?:func|class|struct|enum|protocol|extension|actor)[ \t]+([A-Za-z_]\w*)"
        ),
        _BRACE_LEAD_IN,
    ),
    "c": (_C, _BRACE_LEAD_IN),
    "cpp": (_C, _BRACE_LEAD_IN),
    "php": (
        re.compile(r"(?:(?:abstract|final|readonly)[ \t]+)*(?:function|class|interface|trait|enum)[ \t]+&?(\w+)"),
        _BRACE_LEAD_IN,
    ),
    "ruby": (re.compile(r"(?:class|module|def)[ \t]+([A-Za-z_][\w:.?!=]*)"), _HASH_LEAD_IN),
    "shell": (re.compile(r"(?:function[ \t]+([A-Za-z_][\w-]*)|([A-Za-z_][\w-]*)[ \t]*\(\))"), _HASH_LEAD_IN),
    "lua": (re.compile(r"(?:local[ \t]+)?function[ \t]+([\w.:]+)"), re.compile(r"[ \t]*--")),
}


def _name(match: re.Match[str]) -> str | None:
    return next((g for g in match.groups() if g), None)


def _sections_from_starts(text: str, lines: _Lines, starts: Sequence[tuple[int, str | None, bool]]) -> list[_Section]:
    """Sections from (0-based first line, definition name, is a definition), in order."""
    sections: list[_Section] = []
    if not starts or starts[0][0] > 0:
        end = lines.offset(starts[0][0]) if starts else len(text)
        sections.append(_Section(0, end))
    for k, (line_no, name, _) in enumerate(starts):
        end = lines.offset(starts[k + 1][0]) if k + 1 < len(starts) else len(text)
        sections.append(_Section(lines.offset(line_no), end, definition=name))
    return sections


def _python_sections(text: str) -> list[_Section] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes is not ours to report
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the regex fallback still finds the definitions
    lines = _Lines(text)
    starts: list[tuple[int, str | None, bool]] = []
    previous_end = 0  # 1-based last line of the previous top-level statement
    previous_was_def = True  # so the first statement opens a section
    for node in tree.body:
        is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        # The comment lines directly above belong to the statement.
        while first - 1 > previous_end and lines.line(first - 2).lstrip().startswith("#"):
            first -= 1
        if is_def:
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            starts.append((first - 1, node.name, True))
        elif previous_was_def:
            starts.append((first - 1, None, False))
        previous_was_def = is_def
        previous_end = node.end_lineno or node.lineno
    if not any(is_def for _, _, is_def in starts):
        return None
    if not starts[0][2]:  # leading code (docstring, imports) starts at the top, header comments included
        starts[0] = (0, None, False)
    return _sections_from_starts(text, lines, starts)


def _regex_sections(text: str, language: str | None) -> list[_Section] | None:
    assert language is not None
    definition, lead_in = _DEFINITIONS[language]
    lines = _Lines(text)
    is_def = [False] * len(lines)
    names: list[str | None] = [None] * len(lines)
    for i in range(len(lines)):
        match = definition.match(lines.line(i))
        if match:
            is_def[i] = True
            names[i] = _name(match)
    starts: list[tuple[int, str | None, bool]] = []
    for i in range(len(lines)):
        if not is_def[i]:
            continue
        first = i
        while first > 0 and lines.line(first - 1).strip() and lead_in.match(lines.line(first - 1)):
            first -= 1
        if first > 0 and is_def[first - 1]:
            continue  # consecutive definition lines stay together
        if starts and first <= starts[-1][0]:
            continue
        starts.append((first, names[i], True))
    if not starts:
        return None
    return _sections_from_starts(text, lines, starts)


# --- bounding, packing, numbering ------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")


def _cut_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        if match.end() < len(text):
            pieces.append(text[start : match.end()])
            start = match.end()
    pieces.append(text[start:])
    return pieces


_NEWLINE = re.compile("\n")


def _pack(units: Sequence[str], max_chars: int) -> list[str]:
    packed: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + len(unit) > max_chars:
            packed.append(current)
            current = ""
        current += unit
    if current:
        packed.append(current)
    return packed


def split_bounded(text: str, max_chars: int) -> list[str]:
    """Contiguous pieces of ``text``, each at most ``max_chars``, packed greedily up to the bound.

    Cuts at paragraph boundaries first, then at line ends, then every ``max_chars`` characters.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    return _bounded(text, max_chars, 0) if text else []


def _bounded(text: str, max_chars: int, level: int) -> list[str]:
    if level == 0:
        pieces = _cut_after(text, _PARAGRAPH_BREAK)
    elif level == 1:
        pieces = _cut_after(text, _NEWLINE)
    else:
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    units: list[str] = []
    for piece in pieces:
        if len(piece) > max_chars:
            units.extend(_bounded(piece, max_chars, level + 1))
        else:
            units.append(piece)
    return _pack(units, max_chars)


def _merge(text: str, sections: list[_Section]) -> list[_Section]:
    """Drop empty sections; carry heading-only and whitespace-only sections into the next one."""
    merged: list[_Section] = []
    carry: int | None = None
    for section in sections:
        if section.start >= section.end:
            continue
        if carry is not None:
            section.start = carry
            carry = None
        blank = not text[section.start : section.end].strip()
        if section.heading_only or blank:
            carry = section.start
            continue
        merged.append(section)
    if carry is not None:
        if merged:
            merged[-1].end = len(text)
        elif text[carry:].strip():  # nothing but a heading: it is the chunk
            last = sections[-1]
            merged.append(_Section(carry, len(text), heading_path=last.heading_path, definition=last.definition))
    return merged


def _finish(text: str, sections: list[_Section], max_chars: int, *, is_code: bool = False) -> list[Chunk]:
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if not text.strip():
        return []
    lines = _Lines(text)
    chunks: list[Chunk] = []
    for section in _merge(text, sections):
        body = text[section.start : section.end]
        pieces = _bounded(body, max_chars, 0) if (section.packable or len(body) > max_chars) else [body]
        offset = section.start
        for part, piece in enumerate(pieces, start=1):
            start, end = offset, offset + len(piece)
            offset = end
            stripped_start = start + (len(piece) - len(piece.lstrip()))
            stripped_end = end - (len(piece) - len(piece.rstrip()))
            if stripped_start >= stripped_end:  # whitespace only
                stripped_start, stripped_end = start, end
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=piece,
                    start=start,
                    end=end,
                    start_line=lines.number(stripped_start),
                    end_line=lines.number(stripped_end - 1),
                    heading_path=section.heading_path,
                    definition=section.definition,
                    part=1 if section.packable else part,
                    parts=1 if section.packable else len(pieces),
                    is_code=is_code,
                )
            )
    return chunks
