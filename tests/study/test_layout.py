"""The run-directory layout: one function writes it, one parses it, and they agree."""

import pytest

from sparsedepth.study.layout import (
    LayoutError,
    RunKey,
    find_run_dirs,
    parse_run_dir,
    run_dir,
    run_dir_pattern,
)


def test_run_dir_round_trips_and_matches_the_workflow_pattern(tmp_path):
    key = RunKey("tiny", "mod", "shakespeare", 3)
    path = run_dir("results", key)
    assert path == "results/runs/tiny/mod/shakespeare/seed3" == "results/" + key.path
    assert parse_run_dir(path) == key
    assert run_dir_pattern("results").format(**vars(key)) == path
    (tmp_path / "runs/tiny/mod/shakespeare/seed3").mkdir(parents=True)
    (tmp_path / "runs/tiny/mod/shakespeare/seedx").mkdir(parents=True)
    assert [parse_run_dir(p) for p in find_run_dirs(tmp_path / "runs")] == [key]
    assert find_run_dirs(tmp_path / "runs", "model.safetensors") == []


@pytest.mark.parametrize("bad", ["results/runs/tiny/mod", "a/b/c/seedX", "seed1"])
def test_a_path_that_is_not_a_run_directory_is_named(bad):
    with pytest.raises(LayoutError, match="not a run directory"):
        parse_run_dir(bad)
