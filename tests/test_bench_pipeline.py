"""benchmarks/bench_pipeline.py: the stage table of one fold end to end (CPU smoke run) and the 9 x 10 projection."""
import json
import sys

import pytest

from benchmarks import bench_pipeline
from tests.test_engine import make_config, write_tiny_dataset


def test_projection_is_the_mean_fold_cost_times_ninety_runs():
    reports = [{"config": "a", "total_s": 100.0, "stages_s": {"training": 80.0, "probe_mlp": 5.0}},
               {"config": "b", "total_s": 300.0, "stages_s": {"training": 200.0, "latent_eval": 90.0}}]
    projection = bench_pipeline.project(reports)
    assert projection["mean_fold_s"] == 200.0
    assert projection["table_device_hours"] == pytest.approx(200.0 * 90 / 3600)  # 5.0 device-hours
    assert projection["largest_stage"] == "training"


def test_projection_models_an_unmeasured_config_from_its_samples_per_second():
    measured = {"config": "a", "total_s": 100.0,
                "stages_s": {"compile": 15.0, "training": 60.0, "validation": 15.0, "latent_eval": 10.0},
                "training": {"epochs_completed": 5, "steps": 50, "global_batch": 10}}  # 100 samples per epoch
    projection = bench_pipeline.project([measured], {"a": 999.0, "b": 10.0})
    # b: fixed 100 - 60 - 15 = 25 s, 5 epochs x 100 samples / 10 per s = 50 s of training, validation 15/60 of it
    assert projection["per_config"]["a"] == {"fold_s": 100.0, "gpu_fold_s": 90.0, "train_val_s": 75.0, "compile_s": 15.0,
                                             "source": "measured"}
    assert projection["per_config"]["b"] == {"fold_s": 87.5, "gpu_fold_s": 77.5, "train_val_s": 62.5, "compile_s": 15.0,
                                             "source": "modelled"}
    assert projection["table_device_hours"] == pytest.approx(10 * (100.0 + 87.5) / 3600)
    assert projection["table_gpu_hours_latent_beside"] == pytest.approx(10 * (90.0 + 77.5) / 3600)


def test_a_run_on_a_shared_gpu_gives_its_epochs_and_not_its_time():
    measured = {"config": "a", "total_s": 100.0,
                "stages_s": {"compile": 15.0, "training": 60.0, "validation": 15.0, "latent_eval": 10.0},
                "training": {"epochs_completed": 5, "steps": 50, "global_batch": 10}}  # 100 samples per epoch
    shared = {"config": "b", "total_s": 9999.0, "stages_s": {"training": 9000.0, "validation": 900.0},
              "training": {"epochs_completed": 10, "steps": 100, "global_batch": 10}}
    projection = bench_pipeline.project([measured], {"a": 999.0, "b": 10.0, "c": 10.0}, [shared])
    # fixed stages 25 s (the measured run's); validation 15/60 of training
    # b: its own 10 epochs x 100 samples / 10 per s = 100 s, + 25 % validation, + 25 s = 150 s
    # c: the mean of the measured epochs (5 and 10) = 7.5 epochs: 75 s, + 25 %, + 25 s = 118.75 s
    assert projection["per_config"]["b"]["fold_s"] == pytest.approx(150.0)
    assert projection["per_config"]["b"]["source"] == "modelled, epochs measured"
    assert projection["per_config"]["c"]["fold_s"] == pytest.approx(118.75)
    assert projection["per_config"]["c"]["source"] == "modelled"
    assert projection["model_epochs"] == 7.5


def test_mps_divides_training_by_the_gain_and_the_other_gpu_stages_by_the_overlap():
    report = {"config": "a", "total_s": 100.0, "stages_s": {"training": 60.0, "validation": 15.0, "latent_eval": 10.0}}
    projection = bench_pipeline.project([report], mps=(1.5, 3.0))
    # one report stands for 9 configs x 10 folds: 90 s on the GPU a fold (2.25 h), 75 of them training and
    # validation (1.875 h): 1.875 / 1.5 + (2.25 - 1.875) / 3 = 1.25 + 0.125
    assert projection["table_gpu_hours_latent_beside"] == pytest.approx(2.25)
    assert projection["table_gpu_hours_mps"] == pytest.approx(1.375)


def test_shared_reports_without_samples_per_second_are_refused(tmp_path, monkeypatch, capsys):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"config": "a", "total_s": 1.0, "stages_s": {"training": 1.0}}))
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--project", str(report), "--shared", str(report)])
    with pytest.raises(SystemExit):
        bench_pipeline.main()
    assert "--shared needs --throughput" in capsys.readouterr().err


def test_folds_after_the_first_pay_the_warm_compile_of_a_resumed_segment():
    """A report resumed once: its second segment compiled in 5 s with the cache warm. Folds 2-10 pay 5 s instead of
    the cold 45 s: 10 x 200 s - 9 x 40 s per config, and the mean report stands for all 9 configs."""
    report = {"config": "a", "total_s": 200.0, "stages_s": {"compile": 45.0, "training": 150.0},
              "segments": [{"compile": 45.0}, {"compile": 5.0}]}
    projection = bench_pipeline.project([report])
    assert projection["warm_compile_s"] == 5.0
    assert projection["table_device_hours"] == pytest.approx(9 * (10 * 200.0 - 9 * 40.0) / 3600)


def test_one_fold_end_to_end_on_cpu_times_every_stage(tmp_path, monkeypatch):
    npz_dir, splits = write_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = make_config((tmp_path, npz_dir, splits), "CRL")
    out = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--config", str(config), "--gpu", "cpu", "--max-epochs", "1",
                                      "--workdir", str(tmp_path / "scratch"), "--json", str(out)])
    bench_pipeline.main()
    report = json.loads(out.read_text())
    assert list(report["stages_s"]) == list(bench_pipeline.STAGES)
    assert all(seconds >= 0 for seconds in report["stages_s"].values())
    assert sum(report["stages_s"].values()) <= report["total_s"] * 1.01
    assert report["training"]["epochs_completed"] == 1 and sorted(report["probe_metrics"]) == ["linear", "mlp"]
    whole, chunked = report["validation_memory"]["whole"], report["validation_memory"]["chunked"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert (tmp_path / "scratch" / "checkpoints" / "test_CRL_CNN" / "embeddings_fold-01.pt").is_file()
    assert not (tmp_path / "checkpoints").exists()  # the run stays in its scratch folder


def test_a_paused_run_resumes_and_counts_data_load_and_compile_once(tmp_path, monkeypatch):
    npz_dir, splits = write_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = make_config((tmp_path, npz_dir, splits), "MP")
    scratch, out = tmp_path / "scratch", tmp_path / "report.json"
    command = ["bench_pipeline.py", "--config", str(config), "--gpu", "cpu", "--max-epochs", "2",
               "--set", "trainer.val_period=0", "--workdir", str(scratch), "--json", str(out)]

    monkeypatch.setattr(sys, "argv", command + ["--stop-after", "0"])
    with pytest.raises(SystemExit) as paused:
        bench_pipeline.main()
    assert paused.value.code == bench_pipeline.PAUSED_EXIT_STATUS and not out.exists()
    first = json.loads((scratch / bench_pipeline.SEGMENTS).read_text())
    assert len(first) == 1 and first[0]["paused"] and first[0]["epochs_completed"] == 1

    monkeypatch.setattr(sys, "argv", command)  # the same workdir without --resume: refused, nothing touched
    with pytest.raises(SystemExit, match="already holds a run"):
        bench_pipeline.main()

    monkeypatch.setattr(sys, "argv", command + ["--resume"])
    bench_pipeline.main()
    report = json.loads(out.read_text())
    segments = report["segments"]
    assert [s["paused"] for s in segments] == [True, False] and report["training"]["epochs_completed"] == 2
    assert report["stages_s"]["training"] == pytest.approx(segments[0]["training"] + segments[1]["training"])
    assert report["stages_s"]["compile"] == segments[0]["compile"]
    assert report["resume_overhead_s"] == pytest.approx(segments[1]["data_load"] + segments[1]["compile"])
    assert report["total_s"] == pytest.approx(segments[0]["wall_s"] + segments[1]["wall_s"] - report["resume_overhead_s"])


def test_resume_without_a_paused_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--config", "configs/demo/DEMO_MP_CNN.json", "--gpu", "cpu",
                                      "--workdir", str(tmp_path / "empty"), "--resume"])
    with pytest.raises(SystemExit, match="no paused run"):
        bench_pipeline.main()


def test_a_missing_report_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch):
    missing = tmp_path / "absent.json"
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--project", str(missing)])
    with pytest.raises(SystemExit, match=f"error: {missing}: .*No such file"):
        bench_pipeline.main()
