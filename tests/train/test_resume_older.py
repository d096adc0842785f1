"""A checkpoint made before a setting existed resumes: the setting was then its default."""
from qtrain.train import TrainConfig, run
from qtrain.train.checkpoint import load_checkpoint, save_checkpoint


def test_a_checkpoint_without_a_newer_setting_resumes_with_its_default(tmp_path):
    cfg = dict(data="digits", model="smallcnn", method="sr", epochs=2, batch_size=64, train_subset=256,
               test_subset=100, progress=False, threads=1, lr_milestones=[1])
    straight = run(TrainConfig(**cfg), tmp_path / "straight")
    run(TrainConfig(**{**cfg, "epochs": 1}), tmp_path / "old")
    path = tmp_path / "old" / "checkpoint.pt"
    ck = load_checkpoint(path)
    for key in ("lr_schedule", "warmup_steps", "state_dtype", "weight_dtype"):  # newer than such a run
        ck["config"].pop(key)
    save_checkpoint(path, {k: v for k, v in ck.items() if k != "format"})
    resumed = run(TrainConfig(**cfg), tmp_path / "old", resume=True)
    assert resumed["test_error"] == straight["test_error"]
    assert resumed["replica_digests"] == straight["replica_digests"]
