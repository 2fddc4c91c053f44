"""Corpora, document-level splits, byte-level BPE, token files and batch samplers.

One module per idea: `base` (errors, splits, text reading), `local` and `hub` (the corpora), `corpora` (the
registry), `source` (which source prepared data came from), `preparation` (BPE + token files), `tokens`
(loading them, checked) and `batches` (samplers). Every path is explicit (an argument, a config value or
``$SPARSEDEPTH_DATA_DIR``); nothing is looked up in the source tree, so the installed package works from any
directory.
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
from .preparation import FORMAT_VERSION, TOKEN_FILES, encode_documents, prepare, train_tokenizer
from .source import SOURCE_FILE, Source
from .tokens import TokenData

__all__ = [
    "CORPORA", "DATA_DIR_ENV", "DEFAULT_TINYSHAKESPEARE", "EOT", "FORMAT_VERSION", "GENSIM_WIKI_SAMPLE",
    "LICENCES", "SOURCES", "SOURCE_FILE", "SPLITS", "TINYSHAKESPEARE_HUB", "TINYSTORIES_HUB", "TOKEN_FILES",
    "WIKITEXT_HUB", "DataError", "Source", "TokenData", "carve_test", "clean_play_markdown", "clean_wikitext",
    "corpus_source", "encode_documents", "eval_batches", "group_wikitext", "hub_unavailable",
    "iter_wiki_pages", "load_corpus", "load_hub", "load_shakespeare", "load_tinyshakespeare",
    "load_tinystories", "load_wikipedia", "load_wikitext2", "prepare", "sample_batch", "split_by_name",
    "split_contiguous", "split_on_separator", "tinyshakespeare_path", "train_tokenizer",
]
