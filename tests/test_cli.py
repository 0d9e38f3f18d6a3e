"""User mistakes: one line naming what is wrong and what is allowed, exit code 2, no traceback."""

import subprocess
import sys

import pytest
from conftest import TINY_ARGS

from orchestrator.cli import main


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--method", "ogmge"], "method: unknown method 'ogmge'; known: "),
        (["--dataset", "cifar"], "dataset: unknown dataset 'cifar'; known: "),
        (["--set", "optim.lrr=0.1"], "optim.lrr: unknown key; allowed keys: lr, momentum, name, weight_decay"),
        (["--set", "optim.name=sgdd"], "optim.name: got 'sgdd'; allowed: one of 'sgd', 'adam', 'adamw'"),
        (["--set", "optim.lr=fast"], "optim.lr: got 'fast'; allowed: a value of type float"),
        (["--set", "epochs=0"], "epochs: got 0; allowed: an integer >= 1"),
        (["--set", "lr"], "lr: an override must look like key=value"),
        (
            ["--method", "unimodal", "--set", "params.modality=audio"],
            "params.modality: 'audio' is not a modality of this dataset; allowed: pix, fou",
        ),
        (["--set", "params.alpha=1"], "params.alpha: unknown key; allowed keys: (no keys)"),
        (
            ["--set", "model.fusion=attention"],
            "model.fusion: unknown fusion 'attention'; known: concat, film, gated, sum",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, needle):
    code = main(["train", "--epochs", "1", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0], err


def test_console_script_prints_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", "--method", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_list_shows_every_registered_method_with_params(capsys):
    from trainables.methods import METHODS

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert f"\n{name}: " in "\n" + out
    assert "params.modality (str, default ''):" in out
    for name in METHODS.names():  # each method's native missing-modality scheme, named and explained
        scheme = METHODS.get(name).missing_scheme
        block = ("\n" + out).split(f"\n{name}: ", 1)[1].split("\n", 2)[1]
        assert block.strip().startswith(f"missing modalities ({scheme}): ")


def test_bench_prints_ratios_against_joint(capsys):
    assert (
        main(
            [
                "bench",
                "--only",
                "methods",
                "--methods",
                "unimodal",
                "--epochs",
                "1",
                "--repeats",
                "1",
                *TINY_ARGS,
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip()
        for line in lines
        if line.startswith("| ") and "---" not in line
    }
    assert rows["joint"] == "1.00" and float(rows["unimodal"]) > 0
