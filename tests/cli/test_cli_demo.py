"""`patvm demo`, the README's first command: five steps, a verified model, and nothing else on stderr (TVM's
own warnings -- one "Scope Saving" line per function when the module is exported -- only with --verbose)."""
import subprocess
import sys


def test_demo_runs_checks_and_is_quiet():
    result = subprocess.run([sys.executable, "-m", "patvm.cli", "demo", "--image-size", "32"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line[:5] for line in lines if line.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert "top-1 agreement 100.0%" in result.stdout


def test_every_command_but_rpc_takes_verbose():
    result = subprocess.run([sys.executable, "-m", "patvm.cli", "targets", "--verbose"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "x86-znver3" in result.stdout, result.stderr
