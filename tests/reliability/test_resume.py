"""Resume refuses what it cannot restore, and falls back past what is broken
(issue 9, items 4 and 5).

One small MoE run (checkpoints at steps 2 and 4) is made per module; each test
copies its output directory and breaks the copy:

* item 4, nothing silently reinitialised: deleting any file of the newest
  checkpoint, any key of its trainer state, or any model or optimizer variable
  (router RNG state included), with a manifest rewritten to match so the
  checkpoint verifies, makes `--resume` fail naming that part. Changing the
  RESUME_KEYS settings (experts, top-k, context length, tokenizer, data paths)
  is refused with an old -> new list; raising `max_steps` is logged.
* item 5, corrupted files: truncation (0 bytes, 8 bytes, half, one byte short),
  a flipped header byte, a flipped data byte, appended bytes and a file swapped
  in from another step are each detected naming the file and the failed check;
  `--resume` falls back to the previous checkpoint and says so; `--resume-from`
  an explicitly named corrupt checkpoint fails without falling back.

A deleted or corrupt *file* is what a crash or a bad copy leaves, so `--resume`
falls back past it (and fails naming the part when no older checkpoint
verifies). A checkpoint that verifies but lacks a variable is refused outright.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import safetensors.numpy

from chronos_moe.cli import main
from chronos_moe.training import checkpoint
from chronos_moe.training.checkpoint import CheckpointCorrupt
from chronos_moe.training.run import RunError, build_model, train
from tests.training.helpers import make_data, make_start_checkpoint, small_config

FILES = [*checkpoint.FILES, checkpoint.MANIFEST]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 4-step MoE run (router jitter on, so the router has RNG state in use)."""
    folder = tmp_path_factory.mktemp("resume")
    start = make_start_checkpoint(folder / "start")
    data, _ = make_data(folder)
    config = small_config(
        start, data, folder / "run", use_moe=True, router_jitter_noise=0.1, max_steps=4
    )
    train(config, verbose=False)
    return config


@pytest.fixture
def copy(finished, tmp_path):
    """A copy of the finished run: its config (pointing at the copy) and its checkpoints."""
    output = tmp_path / "run"
    shutil.copytree(finished.output_dir, output)
    return finished.replace(output_dir=str(output)), output / "checkpoints"


def rewrite_manifest(step_dir: Path) -> None:
    """The manifest of the files as they are now: the checkpoint verifies again."""
    manifest = {
        name: {
            "size": (step_dir / name).stat().st_size,
            "sha256": hashlib.sha256((step_dir / name).read_bytes()).hexdigest(),
        }
        for name in checkpoint.FILES
    }
    (step_dir / checkpoint.MANIFEST).write_text(json.dumps(manifest))


# ---- item 4: every part is required ----------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_a_deleted_file_falls_back_and_fails_alone_naming_the_part(copy, name):
    config, checkpoints = copy
    (checkpoints / "step-4" / name).unlink()
    path, skipped = checkpoint.find_resumable(checkpoints, checkpoint.TRAINER_STATE_PARTS)
    assert path == checkpoints / "step-2"
    assert [p.name for p, _ in skipped] == ["step-4"] and name in skipped[0][1]
    shutil.rmtree(checkpoints / "step-2")
    with pytest.raises(RunError, match="no complete checkpoint") as error:
        train(config, resume=True, verbose=False)
    assert f"skipped step-4: {checkpoints / 'step-4'}" in str(error.value)
    part = checkpoint.PARTS[name].split(",")[0]
    assert name in str(error.value) and part in str(error.value)


@pytest.mark.parametrize("key", list(checkpoint.TRAINER_STATE_PARTS))
def test_a_trainer_state_without_a_part_is_refused_naming_it(copy, key):
    config, checkpoints = copy
    step_dir = checkpoints / "step-4"
    state = json.loads((step_dir / "trainer_state.json").read_text())
    del state[key]
    (step_dir / "trainer_state.json").write_text(json.dumps(state))
    rewrite_manifest(step_dir)  # the checkpoint verifies, but lacks the part
    shutil.rmtree(checkpoints / "step-2")
    with pytest.raises(RunError) as error:
        train(config, resume=True, verbose=False)
    message = str(error.value)
    assert f"lacks {key!r}" in message and checkpoint.TRAINER_STATE_PARTS[key] in message
    assert "trainer_state.json" in message


@pytest.mark.parametrize(
    "file, variable, part",
    [
        ("model.safetensors", "the router's seed generator", "router RNG state"),
        ("model.safetensors", "router", "router"),
        ("model.safetensors", "/experts/", "weights"),
        ("model.safetensors", "shared", "weights"),
        ("optimizer.safetensors", "iteration", "learning-rate position"),
        ("optimizer.safetensors", "momentum", "weights"),
        ("optimizer.safetensors", "velocity", "weights"),
    ],
)
def test_a_checkpoint_without_a_variable_is_refused_naming_it(copy, file, variable, part):
    config, checkpoints = copy
    step_dir = checkpoints / "step-4"
    arrays = safetensors.numpy.load_file(str(step_dir / file))
    if variable == "the router's seed generator":  # its path does not say whose it is
        model = build_model(config)
        owners = checkpoint._seed_owners(model)
        variable = next(
            f"{index:05d}:"
            for index, v in enumerate(model.variables)
            if owners.get(id(v), "").endswith("router")
        )
    deleted = next(key for key in sorted(arrays) if variable in key)
    del arrays[deleted]
    safetensors.numpy.save_file(arrays, str(step_dir / file))
    rewrite_manifest(step_dir)
    checkpoint.verify_checkpoint(step_dir, checkpoint.TRAINER_STATE_PARTS)  # it verifies
    with pytest.raises(CheckpointCorrupt, match="Refusing to resume") as error:
        train(config, resume=True, verbose=False)
    message = str(error.value)
    index, path = deleted.split(":", 1)
    assert file in message and "lacks 1 of the run's" in message
    assert f"{index}:" in message and f"({part})" in message


def test_an_optimizer_state_of_another_step_is_refused(copy):
    config, checkpoints = copy
    shutil.copy(checkpoints / "step-2" / "optimizer.safetensors", checkpoints / "step-4")
    rewrite_manifest(checkpoints / "step-4")
    with pytest.raises(
        CheckpointCorrupt, match="optimizer is at iteration 2, the trainer state says 4"
    ):
        train(config, resume=True, verbose=False)


@pytest.mark.parametrize(
    "change, listed",
    [
        ({"num_experts": 4}, "num_experts: 3 -> 4"),
        ({"num_active_experts": 1}, "num_active_experts: 2 -> 1"),
        ({"context_length": 12}, "context_length: 16 -> 12"),
        (
            {"tokenizer_kwargs": {"low_limit": -10.0, "high_limit": 10.0}},
            "tokenizer_kwargs: {'high_limit': 15.0, 'low_limit': -15.0} -> "
            "{'low_limit': -10.0, 'high_limit': 10.0}",
        ),
        ({"n_tokens": 128}, "n_tokens: 64 -> 128"),
    ],
)
def test_changed_settings_are_refused_old_to_new(copy, change, listed):
    config, _ = copy
    with pytest.raises(RunError, match="refusing to resume \\(old -> new\\)") as error:
        train(config.replace(**change), resume=True, verbose=False)
    assert listed in str(error.value)


def test_changed_data_paths_and_several_changes_are_all_listed(copy, tmp_path):
    config, _ = copy
    other = shutil.copy(config.training_data_paths[0], tmp_path / "other.arrow")
    changed = config.replace(training_data_paths=[str(other)], seed=4, num_experts=2)
    with pytest.raises(RunError) as error:
        train(changed, resume=True, verbose=False)
    message = str(error.value)
    assert f"training_data_paths: {config.training_data_paths!r} -> [{str(other)!r}]" in message
    assert "num_experts: 3 -> 2" in message and "seed: 3 -> 4" in message


def test_an_edited_config_hash_is_refused(copy):
    config, checkpoints = copy
    step_dir = checkpoints / "step-4"
    state = json.loads((step_dir / "trainer_state.json").read_text())
    state["config_hash"] = "0" * 16
    (step_dir / "trainer_state.json").write_text(json.dumps(state))
    rewrite_manifest(step_dir)
    with pytest.raises(RunError, match="config_hash '0000000000000000' is not the fingerprint"):
        train(config, resume=True, verbose=False)


def test_raising_max_steps_is_allowed_and_logged(copy, caplog):
    config, checkpoints = copy
    with caplog.at_level(logging.WARNING, logger="chronos_moe.training.run"):
        result = train(config.replace(max_steps=5, save_steps=5), resume=True, verbose=False)
    assert "max_steps changed from 4 to 5 on resume" in caplog.text
    assert [row["step"] for row in result.log] == [1, 2, 3, 4, 5]
    state = json.loads((checkpoints / "step-5" / "trainer_state.json").read_text())
    assert state["optimizer_iterations"] == 5


# ---- item 5: corrupted files -----------------------------------------------------------------


def _truncate(size):
    return lambda content: content[: size(len(content))]


def _flip(position):
    def flip(content):
        index = position(len(content))
        return content[:index] + bytes([content[index] ^ 0xFF]) + content[index + 1 :]

    return flip


HEADER_BYTE = {"model.safetensors": 10, "optimizer.safetensors": 10}  # inside the JSON header
CORRUPTIONS = {
    "truncated to 0 bytes": _truncate(lambda n: 0),
    "truncated to 8 bytes": _truncate(lambda n: 8),
    "truncated to half": _truncate(lambda n: n // 2),
    "one byte short": _truncate(lambda n: n - 1),
    "flipped header byte": None,  # per file, below
    "flipped data byte": _flip(lambda n: n - 2),
    "appended bytes": lambda content: content + b"\0garbage",
}
# The check each corruption fails: the manifest is read as JSON, the others are
# checked against it (size, then sha256).
EXPECTED = {
    "truncated to 0 bytes": "size 0 bytes, manifest says",
    "truncated to 8 bytes": "size 8 bytes, manifest says",
    "truncated to half": "bytes, manifest says",
    "one byte short": "bytes, manifest says",
    "flipped header byte": "sha256 does not match the manifest",
    "flipped data byte": "sha256 does not match the manifest",
    "appended bytes": "bytes, manifest says",
}


def corrupt(path: Path, kind: str) -> None:
    content = path.read_bytes()
    if kind == "flipped header byte":
        change = _flip(lambda n: HEADER_BYTE.get(path.name, 0))
    else:
        change = CORRUPTIONS[kind]
    path.write_bytes(change(content))


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("name", FILES)
def test_each_corruption_is_named_and_resume_falls_back(copy, name, kind):
    _, checkpoints = copy
    target = checkpoints / "step-4" / name
    corrupt(target, kind)
    with pytest.raises(CheckpointCorrupt) as error:
        checkpoint.verify_checkpoint(target.parent, checkpoint.TRAINER_STATE_PARTS)
    message = str(error.value)
    if name == checkpoint.MANIFEST:
        # The manifest has no checksum of its own: JSON that no longer parses, or
        # an entry that no longer matches the file it describes.
        assert ("manifest.json: not valid JSON" in message) or (
            "does not match the manifest" in message or "manifest says" in message
        ), message
    else:
        assert message.startswith(str(target)) and EXPECTED[kind] in message, message
    path, skipped = checkpoint.find_resumable(checkpoints, checkpoint.TRAINER_STATE_PARTS)
    assert path == checkpoints / "step-2" and skipped == [(checkpoints / "step-4", message)]


@pytest.mark.parametrize("name", checkpoint.FILES)
def test_a_file_swapped_in_from_another_step_is_named(copy, name):
    _, checkpoints = copy
    shutil.copy(checkpoints / "step-2" / name, checkpoints / "step-4" / name)
    with pytest.raises(CheckpointCorrupt, match="sha256 does not match|manifest says") as error:
        checkpoint.verify_checkpoint(checkpoints / "step-4", checkpoint.TRAINER_STATE_PARTS)
    assert str(error.value).startswith(str(checkpoints / "step-4" / name))


def test_a_whole_checkpoint_swapped_in_from_another_step_is_named(copy):
    _, checkpoints = copy
    shutil.rmtree(checkpoints / "step-4")
    shutil.copytree(checkpoints / "step-2", checkpoints / "step-4")
    with pytest.raises(CheckpointCorrupt, match="step 2, but the directory is step-4"):
        checkpoint.verify_checkpoint(checkpoints / "step-4", checkpoint.TRAINER_STATE_PARTS)


def test_resume_falls_back_and_says_so(copy, capsys, caplog):
    config, checkpoints = copy
    corrupt(checkpoints / "step-4" / "model.safetensors", "flipped data byte")
    (checkpoints / "step-4.tmp-0badbeef").mkdir()  # and a torn save, removed
    config_file = Path(config.output_dir).parent / "config.yaml"
    config_file.write_text(config.to_yaml())
    assert main(["train", "--config", str(config_file), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "falling back to step-2" in err
    assert f"skipped step-4: {checkpoints / 'step-4' / 'model.safetensors'}: sha256" in err
    # Said once: printed on the CLI, not also logged (which would print it again).
    assert err.count("skipped step-4") == 1
    assert not [record for record in caplog.records if "sha256" in record.getMessage()]
    assert not (checkpoints / "step-4.tmp-0badbeef").exists()
    # It resumed at step 2 and rewrote step 4, which verifies again.
    state = checkpoint.verify_checkpoint(checkpoints / "step-4", checkpoint.TRAINER_STATE_PARTS)
    assert state["step"] == 4 and state["optimizer_iterations"] == 4


def test_an_explicitly_named_corrupt_checkpoint_fails_without_falling_back(copy, capsys):
    config, checkpoints = copy
    corrupt(checkpoints / "step-4" / "optimizer.safetensors", "one byte short")
    before = sorted(p.name for p in Path(config.output_dir).rglob("*"))
    with pytest.raises(RunError, match="Not falling back to another checkpoint") as error:
        train(config, resume_from=checkpoints / "step-4", verbose=False)
    assert "optimizer.safetensors: size" in str(error.value)
    config_file = Path(config.output_dir).parent / "config.yaml"
    config_file.write_text(config.to_yaml())
    status = main(
        ["train", "--config", str(config_file), "--resume-from", str(checkpoints / "step-4")]
    )
    assert status == 2
    assert "Not falling back" in capsys.readouterr().err
    assert sorted(p.name for p in Path(config.output_dir).rglob("*")) == before


def test_resume_from_a_good_checkpoint_continues_from_it(copy, capsys):
    config, checkpoints = copy
    (checkpoints / "step-4" / "model.safetensors").unlink()
    # max_steps=2: the run ends where step-2 left off (no step to compile); its log is step-2's.
    result = train(config.replace(max_steps=2), resume_from=checkpoints / "step-2")
    assert [row["step"] for row in result.log] == [1, 2]
    assert "resuming at step 2" in capsys.readouterr().out
