"""The data folders at the top of the repository go into the wheel as patvm/_data/<name> (see patvm/data.py);
everything else is in pyproject.toml."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA_FOLDERS = ("targets", "schedules", "deploy")   # patvm.data.FOLDERS


class build_py_with_data(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):   # an editable install reads the checkout's folders
            return
        for name in DATA_FOLDERS:
            self.copy_tree(str(ROOT / name), str(Path(self.build_lib) / "patvm" / "_data" / name))


setup(cmdclass={"build_py": build_py_with_data})
