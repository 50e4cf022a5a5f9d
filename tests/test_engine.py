"""The engine: modules, wires and one loop (seeds, checkpoints, resume after SIGKILL, observers)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vaegmm.engine import Addressed, Graph, LabelScore, Module, run
from vaegmm.rundir import RunComplete, RunError


class Counter(Module):
    """Sends a number: its state plus the sum of what it was sent, plus a draw from its seed."""

    def __init__(self, name):
        super().__init__(name)
        self.total = 0.0

    def step(self, inbox, context):
        received = sum(value for _, value in inbox.each("number"))
        self.total += received + np.random.default_rng(context.seed).random()
        return {"number": self.total, "assignments": np.arange(4) % 2}

    def state(self):
        return {"total": self.total}

    def restore(self, state):
        self.total = state["total"]


def two_counters():
    graph = Graph()
    graph.add(Counter("a"))
    graph.add(Counter("b"))
    graph.wire("a", "number", "b")
    graph.wire("b", "number", "a")
    return graph


def test_a_wire_from_a_later_module_delivers_the_previous_round():
    graph = two_counters()
    result = run(graph, 3, seed=1, log=None)
    a = [outbox["a"]["number"] for outbox in result.outboxes]
    b = [outbox["b"]["number"] for outbox in result.outboxes]
    assert a[0] < 1 and b[0] > a[0]  # round 0: a got nothing, b got a's round-0 number
    assert b[1] - b[0] > a[1]  # b received a's round-1 number (this round's)
    assert a[1] - a[0] > b[0]  # a received b's round-0 number (the previous round's)


def test_seeds_are_per_round_and_module_and_reproducible():
    first = run(two_counters(), 2, seed=5, log=None)
    again = run(two_counters(), 2, seed=5, log=None)
    other = run(two_counters(), 2, seed=6, log=None)
    assert first.outboxes[-1]["b"]["number"] == again.outboxes[-1]["b"]["number"]
    assert first.outboxes[-1]["b"]["number"] != other.outboxes[-1]["b"]["number"]


def test_addressed_messages_reach_their_destination_only():
    class Sender(Module):
        def step(self, inbox, context):
            return {"number": Addressed({"x": 1.0, "y": 10.0})}

    class Receiver(Module):
        def step(self, inbox, context):
            return {"got": inbox["number"]}

    graph = Graph()
    graph.add(Sender("s"))
    graph.add(Receiver("x"))
    graph.add(Receiver("y"))
    graph.wire("s", "number", "x").wire("s", "number", "y")
    result = run(graph, 1, log=None)
    assert result.outboxes[0]["x"]["got"] == 1.0 and result.outboxes[0]["y"]["got"] == 10.0


def test_observers_score_with_labels_that_no_module_sees(tmp_path):
    labels = np.array([1, 0, 1, 0])
    result = run(two_counters(), 1, observers=[LabelScore(labels, "a")], log=None, run_dir=tmp_path / "run")
    assert result.rounds[0]["accuracy"] == 1.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["rounds"]
    assert saved[0]["accuracy"] == 1.0


@pytest.mark.parametrize("wiring, message", [
    (lambda g: g.wire("a", "number", "nobody"), "No module named 'nobody'"),
    (lambda g: g.wire("a", "number", "a"), "to itself"),
    (lambda g: g.add(Counter("a")), "already has a module named 'a'"),
])
def test_bad_wiring_is_named(wiring, message):
    with pytest.raises(ValueError, match=message):
        wiring(two_counters())


def test_a_wire_of_a_message_never_sent_is_named():
    graph = two_counters()
    graph.wire("a", "colour", "b")
    with pytest.raises(KeyError, match="sent no message 'colour'"):
        run(graph, 1, log=None)


def test_a_finished_run_is_kept_and_a_different_one_refused(tmp_path):
    out = tmp_path / "run"
    run(two_counters(), 2, run_dir=out, log=None)
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(RunComplete, match="already holds this run, finished"):
        run(two_counters(), 2, run_dir=out, log=None)
    with pytest.raises(RunError, match="different run"):
        run(two_counters(), 2, seed=3, run_dir=out, log=None)
    assert (out / "metrics.json").read_bytes() == before
    run(two_counters(), 2, seed=3, run_dir=out, log=None, overwrite=True)
    assert json.loads((out / "graph.json").read_text())["seed"] == 3


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "run"
    run(two_counters(), 2, run_dir=out, log=None)
    with pytest.raises(RunError, match="other settings"):
        run(two_counters(), 2, seed=9, run_dir=out, log=None, resume=True)


def test_a_stop_keeps_the_last_checkpoint_and_resume_finishes_identically(tmp_path):
    out = tmp_path / "run"
    polls = iter(range(100))
    with pytest.raises(KeyboardInterrupt):
        run(two_counters(), 3, run_dir=out, log=None, stop_requested=lambda: next(polls) == 3)
    resumed = run(two_counters(), 3, run_dir=out, log=None, resume=True)
    straight = run(two_counters(), 3, log=None)
    assert len(resumed.rounds) == 3
    assert resumed.outboxes[-1]["b"]["number"] == straight.outboxes[-1]["b"]["number"]


# The head of a script that runs a system and SIGKILLs itself at its Nth stop poll (argv: run
# directory, N or 0 for never, "new" or "resume"); the system's call follows, with
# stop_requested=stop_requested.
SIGKILL_AT_POLL = textwrap.dedent("""
    import os, signal, sys

    polls = [0]

    def stop_requested():  # polled between steps and after every epoch: SIGKILL at the Nth poll
        polls[0] += 1
        if polls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return False
""")


def kill_and_resume(tmp_path, script_text, kill_at):
    """Run the script whole, then killed at poll ``kill_at`` and resumed: (whole run dir, resumed run dir)."""
    script = tmp_path / "killed.py"
    script.write_text(SIGKILL_AT_POLL + textwrap.dedent(script_text))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(straight), "0", "new"], check=True, env=env)
    died = subprocess.run([sys.executable, str(script), str(killed), str(kill_at), "new"], env=env)
    assert died.returncode == -signal.SIGKILL and (killed / "checkpoint.pt").exists()
    subprocess.run([sys.executable, str(script), str(killed), "0", "resume"], check=True, env=env)
    return straight, killed


KILLED_RUN = """
    from vaegmm import TrainConfig
    from vaegmm.multimodal import fit_multimodal, load_views

    views, labels = load_views(["mnist5k-rotated"], max_samples=120, seed=0)
    config = TrainConfig(vae_epochs=3, round0_epochs=2, gmm_sweeps=6, gmm_chains=2, mutual_iterations=2,
                         latent_dim=4, hidden_dims=(32,), batch_size=32)
    fit_multimodal(views, config, labels=labels, sources=["mnist5k-rotated"], run_dir=sys.argv[1],
                   resume=sys.argv[3] == "resume", progress=False, log=None, stop_requested=stop_requested)
"""

SCORED = ("accuracy", "ari", "nmi", "vae_0/elbo", "vae_1/elbo", "gmm/log_posterior")


def _metrics(out):
    return [{key: row[key] for key in SCORED} for row in json.loads((out / "metrics.json").read_text())["rounds"]]


@pytest.mark.parametrize("kill_at", [4, 9])  # in round 0's second VAE; in round 1's first VAE
def test_a_run_killed_by_sigkill_resumes_to_the_same_metrics(tmp_path, kill_at):
    straight, killed = kill_and_resume(tmp_path, KILLED_RUN, kill_at)
    assert _metrics(killed) == _metrics(straight)


def test_each_shipped_module_records_its_own_config_and_two_vaes_may_differ(tmp_path):
    from vaegmm import load_dataset
    from vaegmm.config import ConfigError, GMMConfig, ManifoldConfig, TrainConfig, VAEConfig
    from vaegmm.modules import GMMStep, VAEStep

    # The projection of a TrainConfig resolves what follows the manifold; the defaults agree.
    assert TrainConfig().vae_config() == VAEConfig() and TrainConfig().gmm_config() == GMMConfig()
    assert TrainConfig().manifold_config() == ManifoldConfig()
    plain = TrainConfig(manifold="none")
    assert (plain.vae_config().vae_init, plain.vae_config().vae_epochs, plain.vae_config().round0_epochs) == (
        "retrain", 200, 100)
    assert plain.gmm_config().gmm_prior == "data"
    with pytest.raises(ConfigError, match="latent_dim must be a positive integer"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="gmm_prior must be one of"):
        GMMConfig(gmm_prior="flat")

    data = load_dataset("digits", max_samples=150, seed=0)
    tiny = dict(vae_epochs=2, round0_epochs=1, batch_size=50, hidden_dims=(16,), augment_rotation=0.0,
                augment_shift=0.0, augment_scale=0.0)
    graph = Graph()
    graph.add(VAEStep("small", data, VAEConfig(latent_dim=3, **tiny)))
    graph.add(VAEStep("large", data, VAEConfig(latent_dim=5, **{**tiny, "hidden_dims": (24, 12)})))
    graph.add(GMMStep("gmm", GMMConfig(n_clusters=4, gmm_sweeps=5, gmm_chains=1, gmm_prior="data"), "cpu"))
    graph.wire("small", "latents", "gmm").wire("gmm", "prior", "small")
    result = run(graph, rounds=2, seed=0, run_dir=tmp_path / "run")
    assert result.outboxes[-1]["small"]["latents"].shape == (150, 3)
    assert result.outboxes[-1]["large"]["latents"].shape == (150, 5)
    saved = {m["name"]: m["config"] for m in json.loads((tmp_path / "run" / "graph.json").read_text())["modules"]}
    assert saved["small"]["latent_dim"] == 3 and saved["large"]["hidden_dims"] == [24, 12]
    assert saved["gmm"] == GMMConfig(n_clusters=4, gmm_sweeps=5, gmm_chains=1, gmm_prior="data").to_dict()


def test_a_run_whose_graph_json_records_whole_train_configs_is_still_the_same_run(tmp_path):
    """Earlier versions recorded each module's whole TrainConfig in graph.json: such a finished run
    still reports finished, and an interrupted one still resumes."""
    from vaegmm import load_dataset
    from vaegmm.config import TrainConfig
    from vaegmm.modules import GMMStep, VAEStep

    data = load_dataset("digits", max_samples=120, seed=0)
    config = TrainConfig(manifold="none", vae_epochs=2, round0_epochs=1, batch_size=40, hidden_dims=(16,),
                         latent_dim=3, n_clusters=4, gmm_sweeps=4, gmm_chains=1)

    def graph():
        built = Graph()
        built.add(VAEStep("vae", data, config))
        built.add(GMMStep("gmm", config, "cpu"))
        built.wire("vae", "latents", "gmm").wire("gmm", "prior", "vae")
        return built

    def record_as_earlier_versions(path):
        saved = json.loads((path / "graph.json").read_text())
        for entry in saved["modules"]:
            entry["config"] = config.to_dict()
        (path / "graph.json").write_text(json.dumps(saved))

    finished = run(graph(), rounds=2, seed=0, run_dir=tmp_path / "finished", progress=False, log=None)
    record_as_earlier_versions(tmp_path / "finished")
    with pytest.raises(RunComplete):
        run(graph(), rounds=2, seed=0, run_dir=tmp_path / "finished", progress=False, log=None)
    polls = iter(range(100))
    with pytest.raises(KeyboardInterrupt):  # stopped after round 0
        run(graph(), rounds=2, seed=0, run_dir=tmp_path / "stopped", progress=False, log=None,
            stop_requested=lambda: next(polls) == 3)
    record_as_earlier_versions(tmp_path / "stopped")
    with pytest.raises(RunError, match="other settings"):
        run(graph(), rounds=2, seed=1, run_dir=tmp_path / "stopped", resume=True, progress=False, log=None)
    resumed = run(graph(), rounds=2, seed=0, run_dir=tmp_path / "stopped", resume=True, progress=False, log=None)
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.rounds] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in finished.rounds]


def test_every_train_config_field_is_run_wide_or_some_modules():
    import dataclasses

    from vaegmm.config import GMMConfig, ManifoldConfig, TrainConfig, VAEConfig

    owned = [{f.name for f in dataclasses.fields(kind)} for kind in (VAEConfig, GMMConfig, ManifoldConfig)]
    run_wide = {"data", "max_samples", "mutual_iterations", "manifold", "seed", "device"}
    assert sum(map(len, owned)) == len(set.union(*owned))  # each field belongs to one module's config
    assert {f.name for f in dataclasses.fields(TrainConfig)} == run_wide | set.union(*owned)
