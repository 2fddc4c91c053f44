"""Drills of issue 26 on arguments: every out-of-range flag is one line and exit 2 at parse time (before a
model loads), and the sampling functions refuse the same values when called directly."""

import pytest
import torch
from conftest import make

from sparsedepth.cli import main as cli_main
from sparsedepth.generate import generate, sample_next


@pytest.mark.parametrize("flags, says", [
    (["--top-k", "0"], "--top-k: 0 is out of range (must be >= 1)"),
    (["--top-k", "-3"], "--top-k: -3 is out of range"),
    (["--top-k", "two"], "--top-k: invalid int value"),
    (["--temperature", "-1"], "--temperature: -1 is out of range (must be >= 0)"),
    (["--temperature", "nan"], "--temperature: nan is out of range"),
    (["--temperature", "inf"], "--temperature: inf is out of range"),
    (["--top-p", "0"], "--top-p: 0 is out of range (must be > 0 and <= 1)"),
    (["--top-p", "1.5"], "--top-p: 1.5 is out of range"),
    (["--max-new-tokens", "-5"], "--max-new-tokens: -5 is out of range (must be >= 1)"),
    (["--draft-tokens", "0", "--speculative-exit", "1"], "--draft-tokens: 0 is out of range"),
    (["--speculative-exit", "0"], "--speculative-exit: 0 is out of range"),
])
def test_sample_flags_out_of_range_are_one_line_exit_2(flags, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["sample", "--run", str(tmp_path / "never-read"), *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and says in err, err


@pytest.mark.parametrize("flags", [["--max-batches", "0"], ["--segment-tokens", "-1"]])
def test_evaluate_counts_out_of_range_are_one_line_exit_2(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["evaluate", "--run", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "is out of range" in err, err


@pytest.mark.parametrize("settings, says", [
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"temperature": -1.0}, "temperature must be finite and >= 0"),
])
def test_sampling_refuses_nonsense_settings(settings, says, tiny_cfg):
    with pytest.raises(ValueError, match=says):
        sample_next(torch.zeros(2, 5), **{"temperature": 1.0, **settings})
    with pytest.raises(ValueError, match=says):
        generate(make("dense", tiny_cfg), [[1, 2]], 3, **{"temperature": 1.0, **settings})


def test_a_negative_token_count_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        generate(make("dense", tiny_cfg), [[1, 2]], -5)
