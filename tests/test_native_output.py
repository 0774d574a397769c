"""TVM's C++ log lines stay out of the CLI's output unless --verbose; Python's own stderr still shows."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from patvm.errors import PatvmError
    from patvm.native_output import native_stderr_captured
    failure = {"none": None, "user": PatvmError("bad input"), "bug": RuntimeError("a bug")}[sys.argv[1]]
    try:
        with native_stderr_captured():
            os.write(2, b"native warning\\n")
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child warning\\\\n')"], check=True)
            print("python line", file=sys.stderr)
            if failure is not None:
                raise failure
    except Exception as exc:
        print(f"caught {exc}", file=sys.stderr)
    print("after", file=sys.stderr)
    os.write(2, b"native after\\n")
""")


def run(case: str) -> str:
    result = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_native_and_child_lines_are_captured_python_lines_are_not():
    assert run("none") == "python line\nafter\nnative after\n"


def test_a_user_error_shows_no_captured_lines():
    assert run("user") == "python line\ncaught bad input\nafter\nnative after\n"


def test_an_unexpected_failure_shows_what_native_code_said():
    err = run("bug")
    assert err.startswith("python line\npatvm: TVM's log before the failure:\nnative warning\nchild warning\n"), err
    assert err.endswith("caught a bug\nafter\nnative after\n"), err
