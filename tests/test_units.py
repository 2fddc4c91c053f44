"""Documents, segments and bytes of evaluation text: exact byte counts, EOT ownership, unit sums."""

import numpy as np
import pytest

from sparsedepth.data import EOT, encode_documents, train_tokenizer
from sparsedepth.units import UNIT_COLUMNS, byte_alphabet, document_ids, token_byte_lengths, unit_table

TEXTS = [
    "Café au lait — naïve résumé, déjà vu.",
    "Emoji: 🙂🚀 and 👩‍👩‍👧 (a joined family), 日本語のテキスト, Ørsted’s «quotes».",
    "Plain ASCII text with spaces,\ttabs\nand newlines.\r\n",
    "Ελληνικά, русский, עברית, العربية — mixed scripts … and NUL-ish \x01 control bytes.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([t * 3 for t in TEXTS[:2]] + ["the quick brown fox " * 20], vocab_size=300)


def test_alphabet_is_the_bytelevel_one():
    from tokenizers import pre_tokenizers

    alphabet = byte_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())


@pytest.mark.parametrize("text", [*TEXTS, "".join(TEXTS), "é", "🙂", ""])
def test_byte_lengths_sum_to_the_utf8_length(tokenizer, text):
    lengths = token_byte_lengths(tokenizer)
    assert lengths.shape == (tokenizer.get_vocab_size(),)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert lengths[ids].sum() == len(text.encode("utf-8"))


def test_special_tokens_are_zero_bytes_and_single_id_decode_would_be_wrong(tokenizer):
    lengths = token_byte_lengths(tokenizer)
    assert lengths[tokenizer.token_to_id(EOT)] == 0
    ids = tokenizer.encode("🙂", add_special_tokens=False).ids
    assert len(ids) > 1  # the emoji's 4 bytes span tokens: decoding one id alone gives U+FFFD
    assert sum(len(tokenizer.decode([i]).encode("utf-8")) for i in ids) != lengths[ids].sum() == 4


def test_joined_documents_count_only_their_text(tokenizer):
    eot = tokenizer.token_to_id(EOT)
    tokens = encode_documents(tokenizer, [TEXTS[:2], TEXTS[2:]], eot)
    assert token_byte_lengths(tokenizer)[tokens].sum() == sum(len(t.encode("utf-8")) for t in TEXTS)


def test_document_ids_give_each_eot_to_the_document_it_ends():
    tokens = np.array([5, 6, 0, 7, 0, 0, 8], dtype=np.uint16)
    assert document_ids(tokens, 0).tolist() == [0, 0, 0, 1, 1, 2, 3]
    assert document_ids(np.array([3, 4]), 0).tolist() == [0, 0]
    assert document_ids(np.zeros(0, dtype=np.uint16), 0).tolist() == []


def test_unit_table_small_example():
    # positions:    0  1  2  3  4  5  6  7   (targets are positions 1..6: nats has 6 entries)
    tokens = np.array([9, 1, 0, 2, 3, 0, 4, 5])
    lengths = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    table = unit_table(np.arange(1.0, 7.0), tokens, eot_id=0, byte_lengths=lengths, segment_tokens=4)
    assert list(table.columns) == UNIT_COLUMNS
    # targets 1..4 are segment 0, 5..6 segment 1; documents: {1, 2(EOT)} -> 0, {3, 4, 5(EOT)} -> 1, {6} -> 2
    assert table[["doc", "segment", "tokens", "bytes"]].values.tolist() == [
        [0, 0, 2, 1], [1, 0, 2, 5], [1, 1, 1, 0], [2, 1, 1, 4]]
    assert table["nats"].tolist() == [3.0, 7.0, 5.0, 6.0]


@pytest.mark.parametrize("segment_tokens", [1, 7, 64, 10_000])
def test_unit_table_sums_by_doc_segment_and_total(segment_tokens):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=1001)
    tokens[rng.choice(1001, 40, replace=False)] = 0  # EOTs, some adjacent (empty documents)
    lengths = rng.integers(0, 5, size=50)
    lengths[0] = 0
    nats = rng.exponential(size=900)  # an unscored tail of 100 tokens
    table = unit_table(nats, tokens, 0, lengths, segment_tokens)
    targets = tokens[1:901]
    doc = document_ids(tokens, 0)[1:901]
    segment = np.arange(900) // segment_tokens
    assert table["tokens"].sum() == 900 and table["bytes"].sum() == lengths[targets].sum()
    assert table["nats"].sum() == pytest.approx(nats.sum(), rel=1e-12)
    assert not table.duplicated(["doc", "segment"]).any()
    assert table["doc"].is_monotonic_increasing and table["segment"].is_monotonic_increasing
    by_doc = table.groupby("doc").sum()
    assert by_doc.index.tolist() == sorted(set(doc.tolist()))
    for d, row in by_doc.iterrows():
        assert row["tokens"] == (doc == d).sum() and row["bytes"] == lengths[targets[doc == d]].sum()
        assert row["nats"] == pytest.approx(nats[doc == d].sum(), rel=1e-12)
    by_segment = table.groupby("segment").sum()
    for s, row in by_segment.iterrows():
        assert row["tokens"] == (segment == s).sum()
        assert row["nats"] == pytest.approx(nats[segment == s].sum(), rel=1e-12)


def test_unit_table_rejects_bad_input():
    tokens, lengths = np.arange(10), np.ones(10, dtype=np.int64)
    with pytest.raises(ValueError, match="non-finite"):
        unit_table(np.array([1.0, np.nan]), tokens, 0, lengths)
    with pytest.raises(ValueError, match="segment_tokens"):
        unit_table(np.ones(3), tokens, 0, lengths, segment_tokens=0)
    with pytest.raises(ValueError, match="at least 11 tokens"):
        unit_table(np.ones(10), tokens, 0, lengths)
    assert list(unit_table(np.zeros(0), tokens, 0, lengths).columns) == UNIT_COLUMNS
