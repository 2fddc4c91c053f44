"""Corpora, document-level splits, byte-level BPE, token files and batch samplers.

One module per idea: `base` (errors, splits, text reading), `local`, `hub` and `enwik8` (the corpora),
`corpora` (the registry), `source` (which source prepared data came from), `preparation` (BPE + token
files), `tokens` (loading them, checked) and `batches` (samplers). Every path is explicit (an argument, a
config value or ``$SPARSEDEPTH_DATA_DIR``; enwik8's download cache is ``$SPARSEDEPTH_CACHE_DIR`` or the
user's cache); nothing is looked up in the source tree, so the installed package works from any directory.
"""

from .base import (
    DATA_DIR_ENV,
    EOT,
    LICENCES,
    SPLITS,
    DataError,
    split_by_name,
    split_contiguous,
)
from .batches import eval_batches, sample_batch
from .corpora import CORPORA, SOURCES, corpus_source, load_corpus
from .enwik8 import ENWIK8, enwik8_path, load_enwik8
from .hub import (
    TINYSTORIES_HUB,
    WIKITEXT_HUB,
    carve_test,
    group_wikitext,
    hub_unavailable,
    load_hub,
    load_tinystories,
    load_wikitext2,
    split_on_separator,
)
from .local import (
    DEFAULT_TINYSHAKESPEARE,
    GENSIM_WIKI_SAMPLE,
    TINYSHAKESPEARE_HUB,
    clean_play_markdown,
    clean_wikitext,
    iter_wiki_pages,
    load_shakespeare,
    load_tinyshakespeare,
    load_wikipedia,
    tinyshakespeare_path,
)
from .preparation import (
    BYTE_VOCAB,
    FORMAT_VERSION,
    TOKEN_FILES,
    byte_lookup,
    byte_tokenizer,
    encode_bytes,
    encode_documents,
    prepare,
    train_tokenizer,
)
from .source import SOURCE_FILE, Source
from .tokens import TokenData

__all__ = [
    "BYTE_VOCAB", "CORPORA", "DATA_DIR_ENV", "DEFAULT_TINYSHAKESPEARE", "ENWIK8", "EOT", "FORMAT_VERSION",
    "GENSIM_WIKI_SAMPLE", "LICENCES", "SOURCES", "SOURCE_FILE", "SPLITS", "TINYSHAKESPEARE_HUB",
    "TINYSTORIES_HUB", "TOKEN_FILES", "WIKITEXT_HUB", "DataError", "Source", "TokenData", "byte_lookup",
    "byte_tokenizer", "carve_test", "clean_play_markdown", "clean_wikitext", "corpus_source", "encode_bytes",
    "encode_documents", "enwik8_path", "eval_batches", "group_wikitext", "hub_unavailable", "iter_wiki_pages",
    "load_corpus", "load_enwik8", "load_hub", "load_shakespeare", "load_tinyshakespeare", "load_tinystories",
    "load_wikipedia", "load_wikitext2", "prepare", "sample_batch", "split_by_name", "split_contiguous",
    "split_on_separator", "tinyshakespeare_path", "train_tokenizer",
]
