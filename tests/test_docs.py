"""The docs site builds with ``mkdocs build --strict`` (offline), and says what the code does."""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from whylogs_songbird.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("publish_references", "SongbirdWriter", "resolve_settings", "claim_session", "LocalServer"):
        assert 'id="whylogs_songbird.' in api and name in api, f"the API reference lacks {name}"
    for image in ("observatory-profile.png", "observatory-compare.png", "observatory-session.png"):
        assert (tmp_path / "img" / image).exists()


def test_mkdocs_config_fetches_nothing():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+font: false", config, re.MULTILINE), "web fonts would be fetched at build time"
    assert "google_analytics" not in config and "analytics:" not in config
    for plugin in ("social", "privacy", "optimize"):
        assert f"- {plugin}" not in config


def test_configuration_page_lists_every_setting_and_environment_variable():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for field in fields(Settings):
        assert f"`{field.name}`" in page, f"configuration.md does not list the setting {field.name}"
    for variables in ENV_VARS.values():
        for variable in variables:
            assert f"`{variable}`" in page, f"configuration.md does not list {variable}"
    assert "`SONGBIRD_CONFIG_DIR`" in page
    for writer_option in ("reference_profile_name", "dataset_timestamp"):
        assert f"`{writer_option}`" in page


def test_cli_page_covers_every_command():
    from whylogs_songbird.cli import app, outbox_app, server_app, session_app
    from whylogs_songbird.cli.alerts import alerts_app

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in app.registered_commands:
        assert f"## `songbird {command.name}`" in page
    groups = (("session", session_app), ("outbox", outbox_app), ("server", server_app), ("alerts", alerts_app))
    for group, sub in groups:
        assert f"## `songbird {group}`" in page
        for command in sub.registered_commands:
            assert f"songbird {group} {command.name}" in page


@pytest.mark.parametrize(
    "fragment",
    [
        "is not an http(s) URL",
        "could not reach",
        "did not answer in time",
        "looks like epoch seconds",
        "is not a serialized whylogs profile",
        "The session is unknown, expired or claimed",
        "The upload URL was refused",
        "is not valid JSON",
        "did you mean",
        "and 64, not",
        "backoff must be from 0 to 60 seconds",
        "is before 1970",
        "is more than a year in the future",
        "A reference profile name must be a non-empty string.",
        "is given twice",
        "check that the endpoint is a songbird API",
        "does not match the songbird contract",
    ],
)
def test_troubleshooting_quotes_the_real_messages(fragment):
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    assert fragment in page
    sources = "".join(
        (ROOT / "whylogs_songbird" / name).read_text(encoding="utf-8")
        for name in ("client.py", "config.py", "profiles.py", "session.py")
    )
    assert fragment in sources, f"{fragment!r} is no longer an error message of the library: update the page"


# -- the messages the docs quote are the code's (issue 22 item 10) ----------------------------------

#: A placeholder: any text (on either side).
_ANY = None
_DOC_PLACEHOLDER = re.compile(r"<[^<>`]*>|\.\.\.|…")
_CODE_PLACEHOLDER = re.compile(r"%[-0-9.]*[sdrgf]")


def _pattern(text: str, placeholder: re.Pattern[str]) -> list[str | None]:
    """``text`` as characters, with each placeholder a single `_ANY`; whitespace collapsed, and
    backticks left out (a code span in Markdown cannot hold the ones a message has)."""
    text = text.replace("`", "")
    out: list[str | None] = []
    position = 0
    for match in placeholder.finditer(text):
        out.extend(text[position : match.start()])
        out.append(_ANY)
        position = match.end()
    out.extend(text[position:])
    collapsed: list[str | None] = []
    for item in out:
        if item is not None and item.isspace():
            item = " "
        if item == " " and collapsed and collapsed[-1] == " ":
            continue
        collapsed.append(item)
    return collapsed


def _code_messages() -> list[list[str | None]]:
    """Every string of the package's code, its f-string fields and %-formats as placeholders."""
    import ast

    messages = []
    for path in sorted((ROOT / "whylogs_songbird").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                parts: list[str | None] = []
                for value in node.values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        parts.extend(_pattern(value.value, _CODE_PLACEHOLDER))
                    else:
                        parts.append(_ANY)
                messages.append(parts)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 12:
                messages.append(_pattern(node.value, _CODE_PLACEHOLDER))
    return messages


def _could_be_the_same(doc: list[str | None], code: list[str | None]) -> bool:
    """Could the code's message read as the doc's quote (found anywhere inside it)?

    A placeholder of the quote stands for any text of the code; a field of the code for a value
    the quote may write out (at most six words of it), or for a placeholder of the quote."""
    doc = [_ANY, *doc, _ANY]
    start = (0, 0, 0)
    seen = {start}
    stack = [start]
    while stack:
        i, j, spaces = stack.pop()
        if i == len(doc) and j == len(code):
            return True
        steps = []
        if i < len(doc) and doc[i] is _ANY:
            steps.append((i + 1, j, 0))
            if j < len(code):
                steps.append((i, j + 1, 0))
        if j < len(code) and code[j] is _ANY:
            steps.append((i, j + 1, 0))
            if i < len(doc) and doc[i] is not _ANY and spaces + (doc[i] == " ") <= 5:
                steps.append((i + 1, j, spaces + (doc[i] == " ")))
        if i < len(doc) and j < len(code) and doc[i] is not _ANY and doc[i] == code[j]:
            steps.append((i + 1, j + 1, 0))
        for step in steps:
            if step not in seen:
                seen.add(step)
                stack.append(step)
    return False


def _quoted_messages() -> list[str]:
    """The messages troubleshooting.md quotes: **`bold code`** entries and its table's first cells."""
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    quoted = re.findall(r"\*\*`([^`]+)`\*\*", page)
    quoted += re.findall(r"^\| `([^`]+)`", page, re.MULTILINE)
    return list(dict.fromkeys(quoted))


QUOTED = _quoted_messages()


@pytest.fixture(scope="module")
def code_messages() -> list[list[str | None]]:
    return _code_messages()


def _said_by_the_code(quoted: str, code_messages: list[list[str | None]]) -> bool:
    """One message of the code matches the quote; or, for a message the code builds from several
    strings, each literal stretch of the quote (between its placeholders) is in one of them."""

    def matches(text: str) -> bool:
        doc = _pattern(text, _DOC_PLACEHOLDER)
        words = set(re.findall(r"[A-Za-z]{4,}", _DOC_PLACEHOLDER.sub(" ", text)))
        if not words:
            return True  # nothing to check (a stretch of punctuation)
        candidates = [
            code for code in code_messages if 2 * sum(w in "".join(c or " " for c in code) for w in words) >= len(words)
        ]
        return any(_could_be_the_same(doc, code) for code in candidates)

    if matches(quoted):
        return True
    stretches = [stretch.strip(" .,:;()'\"") for stretch in _DOC_PLACEHOLDER.split(quoted)]
    return all(matches(stretch) for stretch in stretches if len(stretch) > 3)


@pytest.mark.parametrize("quoted", QUOTED, ids=lambda q: q[:60])
def test_every_message_the_docs_quote_is_one_the_code_says(quoted, code_messages):
    assert _said_by_the_code(quoted, code_messages), (
        f"troubleshooting.md quotes {quoted!r}, which no message of the code says: update the page or the code"
    )


def test_the_quote_check_catches_a_changed_message(code_messages):
    assert len(QUOTED) > 40
    said = "--data-dir and --port are for the local server: leave them out with --endpoint."
    assert _said_by_the_code(said, code_messages)
    assert not _said_by_the_code("--data-dir and --port are for the demo's own server: leave them out.", code_messages)
    assert not _said_by_the_code("No endpoint is set, so the local songbird server was skipped.", code_messages)


# -- getting-started, as a newcomer runs it on a clean checkout (issue 22 item 10) -------------------


def _shell_blocks(page: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


def _commands(block: str) -> list[str]:
    """The block's commands, one per line (continuation lines joined), comment lines left out."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _clean_checkout(target: Path) -> Path:
    """The repository's tracked files (as they are in the working tree) copied to ``target``."""
    import shutil

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_every_shell_block_of_getting_started_runs_on_a_clean_checkout(tmp_path):
    """Each command, as written, in a copy of the repository, for a user with nothing set. The
    install commands are checked against pyproject.toml (this test installs nothing); a
    ``songbird serve`` runs in the background, as in its own terminal, until the test ends."""
    import requests
    import tomllib
    from services import free_port

    checkout = _clean_checkout(tmp_path / "checkout")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGBIRD_", "WHYLABS_", "XDG_", "PYTHON"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        PYTHONPATH=str(checkout),
        WHYLOGS_NO_ANALYTICS="True",
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        SONGBIRD_LOCAL_PORT=str(port),  # the documented default port, moved off 8737 for the test
    )
    project = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    blocks = _shell_blocks(checkout / "docs" / "getting-started.md")
    assert len(blocks) >= 4
    background: list[subprocess.Popen] = []
    try:
        for block in blocks:
            for command in _commands(block):
                words = command.split()
                if words[:2] == ["pip", "install"]:
                    spec = re.fullmatch(r"\"?([a-z-]+)(?:\[([a-z,]+)\])?\"?", words[2])
                    assert spec and spec.group(1) == project["name"], command
                    assert not spec.group(2) or set(spec.group(2).split(",")) <= set(project["optional-dependencies"])
                    continue
                if words[:2] == ["songbird", "serve"]:
                    background.append(subprocess.Popen(
                        ["bash", "-c", command], cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, start_new_session=True,
                    ))
                    for _ in range(600):
                        try:
                            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                                break
                        except requests.ConnectionError:
                            pass
                        assert background[-1].poll() is None, background[-1].stderr.read().decode()
                        time.sleep(0.1)
                    continue
                done = subprocess.run(
                    ["bash", "-ec", command], cwd=checkout, env=env, capture_output=True, text=True, timeout=600
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                for noise in ("Traceback", "Warning", "warning:"):
                    assert noise not in done.stderr, f"{command}: {done.stderr}"
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
        subprocess.run(["songbird", "server", "stop"], cwd=checkout, env=env, capture_output=True, timeout=60)


def test_the_sample_csv_is_the_one_its_script_writes(tmp_path):
    """examples/loans.csv, used by the docs' commands, is regenerated bit for bit by its script."""
    shipped = ROOT / "examples" / "loans.csv"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_loans_csv.py"), str(tmp_path / "loans.csv")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loans.csv").read_bytes() == shipped.read_bytes()
    header = shipped.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:2] == ["applied_at", "region"] and 200 <= len(shipped.read_text().splitlines()) - 1 <= 500
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"(?<![/\w])loans\.csv", text), f"{page.name}: use examples/loans.csv, which is shipped"
