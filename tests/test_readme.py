"""The README and the user guide stay current: the README's plugin table names every plugin deepinv-ext registers,
the commands of both name scripts, options and files that exist, and the hashes the guide gives for the shipped TDV
weights are theirs."""

import hashlib
import importlib.util
import re
import warnings
from pathlib import Path

from torch.distributed.run import get_args_parser

from deepinv_ext import plugins

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
GUIDE = sorted((ROOT / "docs" / "source" / "user_guide").glob("*.rst"))  # the measured results moved here
DOCS = "".join(page.read_text() for page in GUIDE)
SPANS = (re.findall(r"`([^`]+)`", re.sub(r"^```.*?^```", "", README, flags=re.S | re.M))  # inline code
         + [re.sub(r"\s+", " ", m) for m in re.findall(r"``(.+?)``", DOCS, re.S)])     # reST inline literals
COMMANDS = (re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M) + SPANS
            + re.findall(r"^\.\. code-block:: bash\n\n((?:   .*\n|\n)+)", DOCS, re.M))
TORCHRUN = set(get_args_parser()._option_string_actions)  # torchrun's own options (--nproc_per_node, ...)


def test_plugin_table_is_complete():
    missing = [p.key for p in plugins.available() if p.distribution == "deepinv-ext"
               and f"| {p.kind} | `{p.name}` |" not in README]
    assert not missing, f"README's plugin table lacks {missing}"


def test_quickstart_and_test_commands():
    assert "python recipes/quickstart.py" in README and "python -m pytest -q" in README


def defined_options(script: Path) -> str:
    """The source of a recipe or benchmark and of the job scripts it is split into (``<name>_*.py``)."""
    return "".join(p.read_text() for p in [script, *script.parent.glob(f"{script.stem}_*.py")])


def test_commands_name_existing_scripts_and_options():
    """Every ``python recipes/X.py`` / ``python benchmarks/X.py`` of the README names a script that exists and
    options that script defines; every path it names under the repository exists; every option it shows anywhere is
    defined by some script; ``python -m`` modules import and ``deepinv-ext run`` configs exist."""
    for text in COMMANDS:
        for script, args in re.findall(r"(?:python|torchrun[^`\n]*?) ((?:recipes|benchmarks)/\w+\.py)"
                                       r"([^`\n]*(?:\n[^`\n]*)*)", text):
            assert (ROOT / script).is_file(), f"README runs {script}, which does not exist"
            source = defined_options(ROOT / script)
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", re.split(r"python |torchrun ", args)[0]):
                assert f'"{option}"' in source, f"README passes {option} to {script}, which does not define it"
        for config in re.findall(r"deepinv-ext run (\w+/\S+\.ya?ml)", text):
            assert (ROOT / config).is_file(), f"README runs the config {config}, which does not exist"
        for module in re.findall(r"python -m ([\w.]+)", text):
            assert importlib.util.find_spec(module), f"README runs python -m {module}, which is not installed"
    paths = {s.rstrip("/") for s in SPANS if re.fullmatch(r"(recipes|benchmarks|tests|docs|deepinv_ext)/[\w./-]+", s)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
    every = "".join(defined_options(p) for p in [*ROOT.glob("recipes/*.py"), *ROOT.glob("benchmarks/*.py")])
    every += (ROOT / "deepinv_ext" / "cli.py").read_text()
    builtin = {"--help", *TORCHRUN}  # argparse gives every script --help; torchrun's own options
    unknown = sorted({o for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", README + DOCS)
                      if f'"{o}"' not in every and o not in builtin})
    assert not unknown, f"README shows options no script defines: {unknown}"


def test_torchrun_commands_use_torchrun_options():
    """The options a ``torchrun`` command passes before its script are torchrun's own."""
    commands = [line for text in COMMANDS for line in text.splitlines() if "torchrun " in line]
    assert commands, "README shows no torchrun command"
    for line in commands:
        launcher = re.split(r" (?:\S+\.py|-m|<script>)(?: |$)", line.split("torchrun ", 1)[1])[0]
        unknown = [o for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", launcher) if o not in TORCHRUN]
        assert not unknown, f"README passes {unknown} to torchrun, which does not define them: {line}"


def test_published_tdv_weights_match_their_hashes():
    """The SHA-256 the user guide gives for the TDV weights are those of the files shipped in ``tests/data/tdv``."""
    pairs = re.findall(r"``(tdv[\w-]+\.pth)``\n\s+- ``([0-9a-f]{64})``", DOCS)
    for name, digest in pairs:
        assert hashlib.sha256((ROOT / "tests" / "data" / "tdv" / name).read_bytes()).hexdigest() == digest, name
    assert len(pairs) == 2


def test_named_objects_live_where_the_readme_says():
    """Every ``deepinv_ext.x.y`` the README names imports from that path, and not through a moved-module shim (which
    would warn: the README must show the current home)."""
    for dotted in sorted(set(re.findall(r"\bdeepinv_ext(?:\.\w+)+", README))):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj, rest = importlib.import_module(".".join(parts[:i])), parts[i:]
                break
            except ImportError:
                continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            for name in rest:
                assert hasattr(obj, name), f"README names {dotted}, which does not exist"
                obj = getattr(obj, name)
