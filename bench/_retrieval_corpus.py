"""The retrieval-quality corpus: real documentation already on this machine, none written for the test.

Three sources, all read from the Python that runs the benchmark (the project's ``.venv``, whose
packages ``requirements.lock`` pins):

* ``python/topics/<key>.txt``: Python's own help topics (``pydoc_data.topics``, the text ``help()``
  shows: sections of the Language Reference and the standard types), one document each;
* ``packages/<name>.md`` (or ``.txt`` for reStructuredText): each installed distribution's long
  description (its README, the body of ``*.dist-info/METADATA``);
* ``files/<distribution>/<path>``: the Markdown files shipped inside installed packages.

Long descriptions over ``MAX_BYTES`` (mostly changelogs) are left out to keep ingestion small.
Near-duplicates come with the packages themselves: ``httpx``/``httpx2``, ``httpcore``/``httpcore2``,
the ``types-*`` stub packages, the ``taskiq-*`` family, ``argon2-cffi``/``argon2-cffi-bindings``.

``bench/retrieval/corpus.json`` (the manifest: every document's name, origin and SHA-256) pins the
exact texts; ``build`` compares and reports drift (a different Python or lock) instead of hiding it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "retrieval"
MANIFEST = HERE / "corpus.json"
QUESTIONS = HERE / "questions.jsonl"
MAX_BYTES = 40_000
MIN_BYTES = 300
# Distributions that are not documentation: this project itself, and bare data packages.
SKIP = {"trellis"}


@dataclass(frozen=True)
class Document:
    name: str  # the source name it is ingested under
    origin: str  # where on disk it came from
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _topics() -> list[Document]:
    from pydoc_data.topics import topics  # type: ignore[import-not-found,unused-ignore]

    return [
        Document(f"python/topics/{key}.txt", f"pydoc_data.topics[{key!r}]", text)
        for key, text in sorted(topics.items())
        if len(text.encode()) >= MIN_BYTES
    ]


def _long_descriptions() -> list[Document]:
    docs: dict[str, Document] = {}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not name or name in SKIP or name in docs:
            continue
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        body = body.strip()
        size = len(body.encode())
        if size < MIN_BYTES or size > MAX_BYTES:
            continue
        kind = (dist.metadata.get("Description-Content-Type") or "").lower()
        suffix = ".md" if "markdown" in kind else ".txt"
        docs[name] = Document(f"packages/{name}{suffix}", f"{name} {dist.version} METADATA", body + "\n")
    return [docs[name] for name in sorted(docs)]


def _shipped_markdown() -> list[Document]:
    docs: list[Document] = []
    seen: set[str] = set()
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in SKIP:
            continue
        for file in dist.files or ():
            path = str(file)
            if not path.endswith(".md") or ".dist-info/" in path:
                continue
            located = Path(str(dist.locate_file(file)))
            if not located.is_file():
                continue
            text = located.read_text(encoding="utf-8", errors="replace")
            size = len(text.encode())
            if size < MIN_BYTES or size > MAX_BYTES:
                continue
            source = f"files/{name}/{path}"
            if source not in seen:
                seen.add(source)
                docs.append(Document(source, f"{name} {dist.version} {path}", text))
    return sorted(docs, key=lambda d: d.name)


def build() -> tuple[list[Document], list[str]]:
    """The documents, and what differs from the manifest (empty when it matches, or when there is none)."""
    docs = _topics() + _long_descriptions() + _shipped_markdown()
    drift: list[str] = []
    if MANIFEST.exists():
        pinned = {d["name"]: d["sha256"] for d in json.loads(MANIFEST.read_text())["documents"]}
        have = {d.name: d.sha256 for d in docs}
        for name in sorted(set(pinned) | set(have)):
            if pinned.get(name) != have.get(name):
                drift.append(name)
        # Only the pinned documents are used: the questions were written against them.
        docs = [d for d in docs if d.name in pinned]
    return docs, drift


def write_manifest(docs: list[Document]) -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    manifest = {
        "python": sys.version.split()[0],
        "max_bytes": MAX_BYTES,
        "documents": [
            {"name": d.name, "origin": d.origin, "sha256": d.sha256, "bytes": len(d.text.encode())} for d in docs
        ],
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    documents, _ = build()
    if "--write-manifest" in sys.argv:
        write_manifest(documents)
    total = sum(len(d.text) for d in documents)
    print(f"{len(documents)} documents, {total} characters")
    for d in documents:
        print(f"{len(d.text):7d}  {d.name}")
