"""Multi-trial search with Optuna (``nas search --strategy optuna``): tiny studies through the real CLI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from nas.checkpoint import load_checkpoint
from nas.cli.main import main
from nas.genotype import load_genotype
from nas.multitrial import (HEARTBEAT, OWNER, RESUME_FROM, RETRY_OF, TRIAL_DIR, make_sampler, process_identity,
                            sweep_dead_trials)

REPO = Path(__file__).resolve().parent.parent
STUDY = "vlnas-vqa-mmnas"
SEARCH = ["search", "--task", "vqa", "--strategy", "optuna", "--config", "smoke", "--quiet", "train.threads=1",
          "strategy.trials=3", "strategy.trial_epochs=2"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def journal_study(path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(path))))


def trial_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("optuna") / "run"
    assert main([*SEARCH, "--out", str(out)]) == 0
    return out


def test_search_writes_the_best_trials_genotype_from_a_study_in_the_run_dir(searched: Path) -> None:
    assert sorted(p.name for p in searched.iterdir() if "journal" in p.name) == ["optuna.journal"]
    study = journal_study(searched / "optuna.journal")  # the default storage: a journal file in --out
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    best = study.best_trial
    genotype = load_genotype(searched / "genotype.json")
    assert genotype.choices == best.params and set(genotype.choices) == {"enc/0", "enc/1", "dec/0", "dec/1", "dec/2"}
    assert genotype.provenance["strategy"] == "optuna" and genotype.provenance["trial"] == best.number
    assert genotype.metrics == {"val_accuracy": best.value, "eval_split": "val"}
    assert main(["genotype", "validate", str(searched / "genotype.json")]) == 0

    lines = trial_lines(searched)
    assert [line["number"] for line in lines] == [0, 1, 2]
    for line, trial in zip(lines, study.trials):
        assert line["state"] == "COMPLETE" and line["params"] == line["choices"] == trial.params
        assert line["values"] == trial.values
        # Every epoch was reported to the trial, and it is what the retrain loop measured in the trial's folder.
        metrics = [json.loads(r)["metrics"]["accuracy"] for r in
                   (searched / "trials" / str(trial.number) / "metrics.jsonl").read_text().splitlines()]
        assert [trial.intermediate_values[step] for step in (1, 2)] == metrics
        assert line["epoch_metrics"] == {"1": metrics[0], "2": metrics[1]} and trial.value == metrics[-1]
        assert load_checkpoint(searched / "trials" / str(trial.number) / "checkpoints" / "last.pt")["epoch"] == 2
    log = (searched / "log.txt").read_text()
    assert "trial 2 [3/3] complete: accuracy=" in log and f"best so far: trial {best.number}" in log


def test_the_same_seed_gives_the_same_trials_and_genotype(searched: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert main([*SEARCH, "--out", str(again)]) == 0
    strip = lambda lines: [{k: v for k, v in line.items() if k not in ("duration_s", "dir")} for line in lines]  # noqa
    assert strip(trial_lines(again)) == strip(trial_lines(searched))
    first, second = load_genotype(searched / "genotype.json"), load_genotype(again / "genotype.json")
    assert first.choices == second.choices and first.metrics == second.metrics
    assert first.provenance["trial"] == second.provenance["trial"]


def test_rerun_with_more_trials_runs_only_the_missing_ones(searched: Path, tmp_path: Path) -> None:
    out = tmp_path / "more"
    shutil.copytree(searched, out)
    assert main(["search", "--out", str(out), "--resume", "--quiet", "strategy.trials=4"]) == 0
    study = journal_study(out / "optuna.journal")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert trial_lines(out)[:3] == trial_lines(searched)  # the first three were not run again
    assert main(["search", "--out", str(out), "--resume", "--quiet", "strategy.trials=4"]) == 0
    assert len(journal_study(out / "optuna.journal").trials) == 4


def test_a_pruner_stops_trials_after_their_first_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.multitrial

    # Any accuracy is below this threshold: every trial is pruned at its first report.
    monkeypatch.setattr(nas.multitrial, "make_pruner", lambda *args: optuna.pruners.ThresholdPruner(lower=1e9))
    out = tmp_path / "pruned"
    assert main([*SEARCH, "--out", str(out)]) == 0
    study = journal_study(out / "optuna.journal")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3  # pruned trials count towards trials=3
    for trial in study.trials:
        assert list(trial.intermediate_values) == [1]
        folder = out / "trials" / str(trial.number)
        assert load_checkpoint(folder / "checkpoints" / "last.pt")["epoch"] == 1  # written before the pruning
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1 and not (folder / "summary.json").exists()
    assert [line["state"] for line in trial_lines(out)] == ["PRUNED"] * 3
    assert not (out / "genotype.json").exists()  # no trial completed


def test_the_config_pruners_are_optunas() -> None:
    from nas.multitrial import make_pruner

    assert isinstance(make_pruner("median", 3, 1), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 3), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none", 3), optuna.pruners.NopPruner)


def test_sigkill_mid_trial_then_rerun_completes_the_study(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    # Three epochs a trial: after the first report, two epochs remain to be killed in.
    settings = ["strategy.trials=2", "strategy.trial_epochs=3"]
    command = [sys.executable, "-m", "nas", *SEARCH, *settings, "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal, dead = out / "optuna.journal", None
    deadline = time.monotonic() + 240
    try:
        while dead is None and time.monotonic() < deadline:
            assert process.poll() is None, f"the search ended before it could be killed: {process.stderr.read()}"
            running = []
            if journal.is_file():
                try:
                    running = [t for t in journal_study(journal).trials
                               if t.state == TrialState.RUNNING and t.intermediate_values]
                except KeyError:  # the study is not created yet
                    pass
            if running:
                time.sleep(0.2)  # out of the journal write that reported the epoch, into the next epoch
                process.send_signal(signal.SIGKILL)
                process.wait()
                dead = next(t for t in journal_study(journal).trials if t.number == running[0].number)
            time.sleep(0.05)
        assert dead is not None, "no trial reported an epoch in time"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert dead.state == TrialState.RUNNING, "the trial finished before the kill landed"

    rerun = subprocess.run([c for c in command if c != "--quiet"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    study = journal_study(journal)
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL
    assert sum(state in FINISHED for state in states.values()) == 2 and len(states) == 3
    retry = next(t for t in study.trials if t.user_attrs.get(RETRY_OF) == dead.number)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert f"retry of trial {dead.number}, resuming from" in rerun.stdout
    assert f"trial {retry.number} [" in rerun.stdout  # the per-trial progress line
    assert [line["state"] for line in trial_lines(out)].count("FAIL") == 1
    # Resumed from the dead trial's checkpoint, it ends where an uninterrupted run of that trial ends.
    assert all(retry.intermediate_values[step] == value for step, value in dead.intermediate_values.items())
    whole = tmp_path / "whole"
    assert main([*SEARCH, *settings, "--out", str(whole)]) == 0
    uninterrupted = journal_study(whole / "optuna.journal").trials[dead.number]
    assert uninterrupted.params == dead.params
    assert retry.intermediate_values == uninterrupted.intermediate_values and retry.values == uninterrupted.values


def test_multi_objective_writes_a_pareto_front(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "pareto"
    assert main([*SEARCH, "--out", str(out), "strategy.trials=4", "strategy.trial_epochs=1",
                 "strategy.objectives=[accuracy,params,latency]"]) == 0
    study = journal_study(out / "optuna.journal")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    signs = [1, -1, -1]  # accuracy up, parameters and latency down

    def dominates(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    files = sorted((out / "pareto").glob("*.json"), key=lambda p: int(p.stem))
    front = [next(t for t in complete if t.number == int(p.stem)) for p in files]
    assert front and not any(dominates(a, b) for a in front for b in front)
    assert all(any(dominates(a, t) for a in front) for t in complete if t not in front)  # the whole front
    for path, trial in zip(files, front):
        genotype = load_genotype(path)
        assert genotype.choices == trial.params and genotype.provenance["trial"] == trial.number
        assert main(["genotype", "validate", str(path)]) == 0
        # "params" is the built child network's parameter count; latency was measured (ms, > 0).
        weights = load_checkpoint(out / "trials" / str(trial.number) / "checkpoints" / "last.pt")["model"]
        assert genotype.metrics["params"] == trial.values[1] == sum(
            t.numel() for t in weights.values() if isinstance(t, torch.Tensor))
        assert genotype.metrics["latency_ms"] == trial.values[2] > 0
    best = load_genotype(out / "genotype.json")
    assert best.provenance["trial"] == max(front, key=lambda t: (t.values[0], -t.number)).number


def test_processes_share_a_study_through_a_storage_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = [*SEARCH, f"strategy.storage={url}", "strategy.trial_epochs=1"]
    assert main([*shared, "--out", str(tmp_path / "a"), "strategy.trials=1"]) == 0
    assert main([*shared, "--out", str(tmp_path / "b"), "strategy.trials=2"]) == 0
    study = optuna.load_study(study_name=STUDY, storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(p.name for p in (tmp_path / "b" / "trials").iterdir()) == ["1"]  # b ran only the missing trial
    assert [line["number"] for line in trial_lines(tmp_path / "b")] == [0, 1]
    assert not list(tmp_path.rglob("*.journal"))


def test_dead_trials_are_failed_and_retried_live_ones_are_kept(tmp_path: Path) -> None:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler("random", 0))
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    me = process_identity()
    now = time.time()
    owners = {
        "dead here": ({**me, "pid": finished.pid, "start": None}, now),
        "live here": (me, now - 10_000),  # a live process on this machine is never failed, even when quiet
        "elsewhere, beating": ({**me, "host": "other-host"}, now),
        "elsewhere, silent": ({**me, "host": "other-host"}, now - 10_000),
    }
    numbers = {}
    for name, (owner, beat) in owners.items():
        trial = study.ask()
        trial.suggest_categorical("enc/0", ["self_att", "feed_forward"])
        trial.set_user_attr(OWNER, owner)
        trial.set_user_attr(HEARTBEAT, beat)
        trial.set_user_attr(TRIAL_DIR, f"/runs/{name}")
        numbers[name] = trial.number
    assert sorted(sweep_dead_trials(study, grace_period=60)) == [numbers["dead here"], numbers["elsewhere, silent"]]
    states = {t.number: t.state for t in study.trials}
    assert [states[numbers[name]] for name in owners] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                                                          TrialState.FAIL]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[RETRY_OF] for t in waiting) == sorted([numbers["dead here"],
                                                                      numbers["elsewhere, silent"]])
    for retry in waiting:
        original = study.trials[retry.user_attrs[RETRY_OF]]
        assert retry.user_attrs[RESUME_FROM] == original.user_attrs[TRIAL_DIR]
        asked = study.ask()  # the retries are asked first, with the same parameters
        assert asked.suggest_categorical("enc/0", ["self_att", "feed_forward"]) == original.params["enc/0"]
    assert sweep_dead_trials(study, grace_period=60) == []  # nothing is failed twice


def test_sampling_is_seeded_per_trial_so_a_resumed_study_samples_like_an_uninterrupted_one() -> None:
    choices = {f"dec/{i}": ["self_att", "rel_self_att", "guided_att", "feed_forward"] for i in range(6)}

    def objective(trial: optuna.Trial) -> float:
        picked = [trial.suggest_categorical(label, ops) for label, ops in choices.items()]
        return float(sum(op == "guided_att" for op in picked))

    def run(parts: list[int], sampler_of=lambda: make_sampler("tpe", 888, startup_trials=3)) -> list[dict]:
        storage = optuna.storages.InMemoryStorage()
        for n_trials in parts:  # a new process: a new sampler on the same storage
            study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                        direction="maximize", sampler=sampler_of())
            study.optimize(objective, n_trials=n_trials)
        return [t.params for t in study.trials]

    whole = run([8])  # 3 random startup trials, then TPE
    assert run([3, 5]) == whole and run([8]) == whole
    # What this avoids: a plain seeded sampler replays its stream in a new process.
    replayed = run([2, 2], sampler_of=lambda: optuna.samplers.RandomSampler(seed=888))
    assert replayed[2] == replayed[0]
    resumed = run([2, 2], sampler_of=lambda: make_sampler("random", 888))
    assert resumed == run([4], sampler_of=lambda: make_sampler("random", 888)) and resumed[2] != resumed[0]


@pytest.mark.parametrize("override,expected", [
    ("strategy.sampler=cmaes", "strategy.sampler: unknown sampler 'cmaes'. Valid: tpe, random"),
    ("strategy.pruner=asha", "strategy.pruner: unknown pruner 'asha'. Valid: median, hyperband, none"),
    ("strategy.objectives=[params]", "strategy.objectives: the first objective must be the task's metric"),
    ("strategy.objectives=[accuracy,flops]", "strategy.objectives: unknown objective 'flops'"),
    ("strategy.storage=redis://localhost/0", "strategy.storage: unknown scheme 'redis'"),
    ("strategy.lr_range=[1e-3,1e-5]", "strategy.lr_range must be [low, high]"),
    ("strategy.trails=3", "unknown key 'strategy.trails'"),
    ("--nproc=2", "--nproc / torchrun: strategy optuna trains one process per trial"),
])
def test_user_mistakes_are_one_line_errors(override: str, expected: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    extra = ["strategy.tune_lr=true"] if "lr_range" in override else []
    assert main([*SEARCH, "--out", str(tmp_path / "x"), override, *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    if "storage" not in override:  # checked before the run directory is made
        assert not (tmp_path / "x").exists()
    assert not (tmp_path / "x" / "optuna.journal").exists()


def test_another_search_config_is_refused_for_the_same_run_dir_or_study(searched: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    before = (searched / "optuna.journal").read_bytes()
    assert main([*SEARCH, "--out", str(searched), "space.hidden=16"]) == 2
    assert "already holds a run with another config (differs in space.hidden)" in capsys.readouterr().err
    shared = tmp_path / "shared.journal"
    shutil.copy(searched / "optuna.journal", shared)
    assert main([*SEARCH, "--out", str(tmp_path / "new"), f"strategy.storage={shared}", "space.hidden=16"]) == 2
    assert f"study '{STUDY}' was made by another search config (differs in space.hidden)" in capsys.readouterr().err
    assert (searched / "optuna.journal").read_bytes() == before


def test_a_typo_in_an_experiment_files_strategy_section_still_fails(tmp_path: Path, capsys) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("strategy:\n  arch_every: 2\n  trails: 3\n")
    assert main(["search", "--strategy", "optuna", "--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'strategy.trails'" in capsys.readouterr().err


def test_the_one_shot_loop_refuses_the_optuna_strategy() -> None:
    from nas.errors import UserError
    from nas.registry import STRATEGIES

    with pytest.raises(UserError, match="multi-trial strategy"):
        STRATEGIES.get("optuna")(STRATEGIES.get("optuna").Config(), seed=0)


def test_latency_is_a_median_of_timed_forward_passes() -> None:
    import torch

    from nas.multitrial import measure_latency

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.linear(batch["x"])

    assert measure_latency(Model(), {"x": torch.ones(4, 8)}, torch.device("cpu")) > 0


@pytest.mark.parametrize("task,metric", [("vgd", "val_accuracy"), ("itm", "dev_rsum")])
def test_grounding_and_matching_studies_write_valid_genotypes(task: str, metric: str, tmp_path: Path) -> None:
    out = tmp_path / task
    assert main(["search", "--task", task, "--strategy", "optuna", "--config", "smoke", "--quiet", "train.threads=1",
                 "strategy.trials=2", "strategy.trial_epochs=1", "--out", str(out)]) == 0
    genotype = load_genotype(out / "genotype.json")
    assert genotype.task == task and genotype.provenance["strategy"] == "optuna" and metric in genotype.metrics
    assert main(["genotype", "validate", str(out / "genotype.json")]) == 0
