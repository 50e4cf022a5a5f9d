"""The README's wiring example runs as printed (with a tiny VAE and a temporary run directory)."""

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_wiring_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"<!-- wiring-example -->\n```python\n(.*?)```", text, re.S).group(1)
    small = (code.replace('load_dataset("mnist5k")', 'load_dataset("mnist5k", max_samples=300)')
             .replace("VAEConfig(round0_epochs=40, vae_epochs=40)",
                      "VAEConfig(round0_epochs=2, vae_epochs=2, latent_dim=4, hidden_dims=(32,))"))
    assert small.count("max_samples") == 1 and small.count("vae_epochs=2") == 1  # the substitutions took
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(small, "README wiring example", "exec"), namespace)
    rounds = json.loads((tmp_path / "runs" / "kmeans" / "metrics.json").read_text())["rounds"]
    assert len(rounds) == 2 and rounds[-1]["accuracy"] > 0.2  # k-means of a 2-epoch VAE beats chance (0.1)
    assert (tmp_path / "runs" / "kmeans" / "round_1" / "vae" / "vae.pt").exists()
    assert namespace["result"].outboxes[-1]["kmeans"]["assignments"].shape == (300,)
