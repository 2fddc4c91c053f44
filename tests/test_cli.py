"""The command line as a user meets it: help, clear one-line errors, non-zero exits, no partial outputs."""

import contextlib
import io
import json
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    """`python -m sparsedepth ARGS` in this process (`sparsedepth.cli.main`, what `__main__` calls): its exit
    code and what it printed. In-process because each fresh interpreter spends seconds importing torch; the
    module entry point itself is run once, in `test_help_lists_commands_and_config_flags`."""
    from sparsedepth.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["sparsedepth", *args], code, out.getvalue(), err.getvalue())


def test_help_lists_commands_and_config_flags():
    top = subprocess.run([sys.executable, "-m", "sparsedepth", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert top.returncode == 0 and "train" in top.stdout and "evaluate" in top.stdout
    train_help = run("train", "--help")
    assert "--capacity" in train_help.stdout and "--model.d_model" in train_help.stdout


def test_every_config_field_has_help_and_one_vocabulary_size(tmp_path):
    """Each TrainConfig/model field documents itself in `train --help`; the vocabulary size is stated once
    (`vocab_size`, the BPE's): the model shape carries none, so `model.vocab_size` is refused."""
    import dataclasses

    from sparsedepth.cli import build_parser, main
    from sparsedepth.config import ModelShape
    from sparsedepth.train import TrainConfig

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    help_text = " ".join(train_parser.format_help().split())
    for cls, prefix in ((TrainConfig, ""), (ModelShape, "model.")):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help string"
            if f.name != "model":
                assert f"--{prefix}{f.name}" in help_text
                assert " ".join(f.metadata["help"].split()) in help_text
    assert "--model.vocab_size" not in help_text
    assert "vocab_size" not in dataclasses.asdict(TrainConfig())["model"]
    code = main(["train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"),
                 "--config", '{"model": {"vocab_size": 512}}'])
    assert code == 2 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--router", "nope"], "unknown router 'nope'"),
    (["--router", "mod", "--capacity", "0"], "capacity"),
    (["--router", "mod", "--capacity", "1.5"], "capacity"),
    (["--dataset", "nope"], "nope"),
    (["--model.d_model", "30"], "divisible"),
])
def test_bad_input_is_one_clear_line_and_exit_2(flags, message, tmp_path):
    result = run("train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"), *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_config_file_names_the_key(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"router": "mod", "steps": -3}))
    result = run("train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "d"),
                 "--config", str(config))
    assert result.returncode == 2 and "steps" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_unfinished_run_is_a_clear_error(tmp_path):
    result = run("evaluate", "--run", str(tmp_path))
    assert result.returncode == 1 and "did not finish" in result.stderr


def test_train_then_evaluate_end_to_end(tmp_path):
    data = str(tmp_path / "data")
    common = ["--data-dir", data, "--vocab-size", "512", "--model.d_model", "32", "--model.n_layers", "2",
              "--model.max_seq_len", "32", "--seq-len", "32", "--batch-size", "4", "--eval-batches", "2"]
    result = run("train", "--out", str(tmp_path / "run"), "--router", "threshold", "--capacity", "0.5",
                 "--steps", "6", "--eval-every", "3", "--log-every", "3", "--quiet", *common)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 6
    result = run("evaluate", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "eval.json"),
                 "--max-batches", "2")
    assert result.returncode == 0, result.stderr
    assert "val loss" in result.stdout and (tmp_path / "eval.json").exists()
    result = run("sample", "--run", str(tmp_path / "run"), "--prompt", "KING:", "--max-new-tokens", "5",
                 "--show-routing", "--no-color")
    assert result.returncode == 0, result.stderr
    assert any(ch in result.stdout for ch in "₁₂") and "blocks run, of 2" in result.stdout
    result = run("sample", "--run", str(tmp_path / "run"), "--max-new-tokens", "500")
    assert result.returncode == 2 and "max_seq_len" in result.stderr
    greedy = ["sample", "--run", str(tmp_path / "run"), "--prompt", "KING:", "--max-new-tokens", "8"]
    plain = run(*greedy, "--temperature", "0")
    spec = run(*greedy, "--temperature", "0", "--speculative-exit", "1", "--draft-tokens", "3")
    assert spec.returncode == 0 and spec.stdout == plain.stdout and "drafts accepted" in spec.stderr
    result = run(*greedy, "--speculative-exit", "1")
    assert result.returncode == 2 and "--temperature 0" in result.stderr


def test_prepare_then_auto_resume_of_a_killed_job(tmp_path):
    """The workflow's path: `prepare`, then `train --auto-resume` with inline JSON. A job killed after its
    first checkpoint resumes from it; a changed config starts afresh instead of resuming a different run."""
    from sparsedepth.train import TrainConfig, train

    data = tmp_path / "data"
    result = run("prepare", "--dataset", "shakespeare", "--out", str(data / "shakespeare-v512"),
                 "--vocab-size", "512")
    assert result.returncode == 0 and (data / "shakespeare-v512" / "meta.json").exists(), result.stderr
    fields = {"data_dir": str(data), "vocab_size": 512, "steps": 6, "batch_size": 2, "seq_len": 16,
              "checkpoint_every": 3, "eval_every": 6, "eval_batches": 1, "log_every": 3,
              "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_seq_len": 16}}
    out = tmp_path / "run"
    train(TrainConfig.from_dict(fields), out, stop_after=3, progress=False)  # the "killed" job
    result = run("train", "--out", str(out), "--config", json.dumps(fields), "--auto-resume", "--quiet")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == 1  # resumed: step 3 logged once, not re-run

    full = tmp_path / "full"
    train(TrainConfig.from_dict(fields), full, progress=False)
    assert json.loads((out / "summary.json").read_text())["val_loss"] == \
        json.loads((full / "summary.json").read_text())["val_loss"]

    changed = {**fields, "lr": 1e-3}
    train(TrainConfig.from_dict(fields), out, stop_after=3, progress=False, overwrite=True)
    result = run("train", "--out", str(out), "--config", json.dumps(changed), "--auto-resume", "--quiet")
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "fresh"
    train(TrainConfig.from_dict(changed), fresh, progress=False)
    assert json.loads((out / "summary.json").read_text())["val_loss"] == \
        json.loads((fresh / "summary.json").read_text())["val_loss"]  # not a resume of the old config


def test_inline_json_config_errors_are_clear(tmp_path):
    result = run("train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "d"), "--config",
                 '{"steps": ')
    assert result.returncode == 2 and "invalid inline JSON" in result.stderr
