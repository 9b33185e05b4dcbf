"""The command line: inspect (offline and against a core), flags, and errors in one line (real processes)."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import v2, v5
from proxy_harness import tampered

from forward_auth import __version__
from forward_auth.cli import COMMANDS, _parser, main
from forward_auth.devcore.minter import SigningKey
from forward_auth.devcore.server import start_in_thread
from forward_auth.devcore.state import DevCore


@pytest.fixture(scope="module")
def devcore() -> Iterator[tuple[DevCore, str]]:
    core, url, stop = start_in_thread()
    yield core, url
    stop()


@pytest.fixture(autouse=True)
def no_core_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARD_AUTH_CORE_URL", raising=False)


def test_inspect_decodes_offline_and_says_the_signature_is_not_checked(capsys: pytest.CaptureFixture[str],
                                                                       key: SigningKey) -> None:
    assert main(["inspect", v5(key, parentRefreshTokenHash1="p")]) == 0
    out = capsys.readouterr().out
    assert "version:  5" in out and f"kid:      {key.kid}" in out and "user-1" in out
    assert "(not expired)" in out and "the core must be asked" in out
    assert out.splitlines()[-1] == "signature: not checked (no core given: --core-url or FORWARD_AUTH_CORE_URL)"


def test_inspect_offline_fails_an_expired_token(capsys: pytest.CaptureFixture[str], key: SigningKey) -> None:
    assert main(["inspect", v5(key, exp=1_000_000_000)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "verifies: no (expired)"


@pytest.mark.parametrize("pasted", ["{t}", " Bearer {t}\n", "Authorization: Bearer {t}", "sAccessToken={t}",
                                    "Cookie: theme=dark; sAccessToken={t}; sFrontToken=x", "st-access-token: {t}"])
def test_inspect_takes_what_people_paste(pasted: str, capsys: pytest.CaptureFixture[str], key: SigningKey) -> None:
    assert main(["inspect", pasted.format(t=v5(key))]) == 0
    assert "user:     user-1" in capsys.readouterr().out


def test_inspect_legacy_token(capsys: pytest.CaptureFixture[str], key: SigningKey) -> None:
    assert main(["inspect", v2(key)]) == 0
    assert "version:  2" in capsys.readouterr().out


def test_inspect_garbage_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "not-a-token"]) == 1
    assert "not a SuperTokens access token" in capsys.readouterr().out


def test_inspect_against_a_core(capsys: pytest.CaptureFixture[str], devcore: tuple[DevCore, str]) -> None:
    core, url = devcore
    good = core.create_session("public", "ann", {}, {})["accessToken"]["token"]
    assert main(["inspect", good, "--core-url", url]) == 0
    assert "verifies: yes" in capsys.readouterr().out
    assert main(["inspect", core.mint_token(key="foreign"), "--core-url", url]) == 1
    assert "verifies: no (unknown-kid" in capsys.readouterr().out
    assert main(["inspect", core.mint_token(claim_overrides={"exp": 1}), "--core-url", url]) == 1
    assert "verifies: no (expired" in capsys.readouterr().out


def test_inspect_reads_the_core_from_the_environment_and_fails_a_tampered_token(
        capsys: pytest.CaptureFixture[str], devcore: tuple[DevCore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    core, url = devcore
    monkeypatch.setenv("FORWARD_AUTH_CORE_URL", url)
    good = core.create_session("public", "ann", {}, {})["accessToken"]["token"]
    assert main(["inspect", good]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"verifies: yes, against {url}"
    assert main(["inspect", tampered(good)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "verifies: no (bad-signature: signature does not verify)"


def test_inspect_with_an_unreachable_core_says_why_once(capsys: pytest.CaptureFixture[str], key: SigningKey) -> None:
    assert main(["inspect", v5(key), "--core-url", "http://127.0.0.1:9"]) == 1
    out, err = capsys.readouterr()
    assert "verifies: no (keys-unavailable" in out
    assert (out + err).count("NewConnectionError") == 1


def test_check_config_prints_the_effective_settings(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_AUTH_CHECK_DATABASE", "true")
    assert main(["serve", "--check-config", "--legacy", "--core-url", "http://a:1;http://b:2"]) == 0
    out = capsys.readouterr().out
    assert '"session_expired_status": 440' in out and '"check_database": true' in out and '"http://b:2"' in out


def test_boolean_flags_are_switches_over_the_environment(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARD_AUTH_CHECK_DATABASE", "true")
    assert main(["serve", "--check-config", "--no-check-database"]) == 0
    assert '"check_database": false' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # a value is an unknown argument
        main(["serve", "--check-config", "--legacy", "true"])
    assert exited.value.code == 2


def test_check_config_masks_the_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--check-config", "--core-api-key", "s3cr3t-key"]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-key" not in out and '"core_api_key": "***"' in out


def test_check_config_checks_the_policy_file_as_serve_does(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "p.yaml"
    path.write_text("rules: [{session: maybe}]\n")
    assert main(["serve", "--check-config", "--policy-file", str(path)]) == 2
    assert "rules[0]: session must be one of" in capsys.readouterr().err
    path.write_text("rules: [{session: public}]\n")
    assert main(["serve", "--check-config", "--policy-file", str(path)]) == 0


POLICY = """
rules:
  - {name: public, match: {path_prefix: /public/}, session: public}
  - name: admin
    match: {path_prefix: /admin/, methods: [POST]}
    claims: [{claim: st-role, includes: admin}]
"""


def test_check_policy_prints_rules_in_match_order(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    assert main(["check-policy", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 rules, first match wins"
    assert lines[1].strip().startswith("1. public") and lines[2].strip().startswith("2. admin")
    assert "st-role includes 'admin'" in lines[2] and "default" in lines[3]


def test_check_policy_counts_one_rule_in_the_singular(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "p.yaml"
    path.write_text("rules: [{name: all, session: public}]\n")
    assert main(["check-policy", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{path}: 1 rule, first match wins"


def test_check_policy_refuses_a_bad_file_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "p.yaml"
    path.write_text("rules: [{claims: [{claim: st-role, contains: x}]}]")
    assert main(["check-policy", str(path)]) == 2
    assert "rules[0], claims[0]: exactly one of" in capsys.readouterr().err


def test_explain_names_the_rule_and_checks_a_tokens_claims(capsys: pytest.CaptureFixture[str], tmp_path,  # noqa: ANN001
                                                          key: SigningKey) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    assert main(["explain", "--policy-file", str(path), "--method", "post", "--uri", "/admin/x?y=1"]) == 0
    assert "POST /admin/x -> rule admin" in capsys.readouterr().out
    assert main(["explain", "--policy-file", str(path), "--method", "GET", "--uri", "/admin/x"]) == 0
    assert "-> rule default" in capsys.readouterr().out
    assert main(["explain", "--policy-file", str(path), "--method", "POST", "--uri", "/admin/x",
                 "--token", v5(key)]) == 0
    assert "claims: satisfied" in capsys.readouterr().out
    user = v5(key, **{"st-role": {"v": ["user"], "t": 1}})
    assert main(["explain", "--policy-file", str(path), "--method", "POST", "--uri", "/admin/x", "--token", user]) == 1
    assert '"expectedToInclude": "admin"' in capsys.readouterr().out


def test_serve_leaves_an_operators_metrics_directory_alone(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    from forward_auth.cli import metrics_directory

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert metrics_directory() is None  # not ours: never removed
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    created = metrics_directory()
    assert created is not None and created != str(tmp_path)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def taken() -> Iterator[str]:
    """HOST:PORT of a socket that is listening."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield f"127.0.0.1:{sock.getsockname()[1]}"


BAD_ARGUMENTS = [
    ["serve", "--anti-csrf", "SOMETIMES"],
    ["serve", "--bind", "nonsense"],
    ["serve", "--bind", "{taken}"],
    ["serve", "--bind", "nope.invalid:8080"],
    ["serve", "--config", "/nonexistent/config.yaml"],
    ["serve", "--policy-file", "/nonexistent/policy.yaml"],
    ["serve", "--check-config", "--policy-file", "/nonexistent/policy.yaml"],
    ["dev-core", "--bind", "nonsense"],
    ["dev-core", "--bind", "{taken}"],
    ["dev-core", "--bind", "0.0.0.0:0"],
    ["dev-core", "--bind", "nope.invalid:3567", "--allow-remote"],
    ["demo", "--host", "0.0.0.0"],
    ["demo", "--host", "nope.invalid"],
    ["check-policy", "/nonexistent/policy.yaml"],
    ["explain", "--uri", "/"],
    ["explain", "--policy-file", "/nonexistent/policy.yaml", "--uri", "/"],
    ["inspect", "eyJ.eyJ.sig", "--core-url", "ftp://core"],
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
def test_every_command_refuses_bad_arguments_in_one_line_with_exit_2(args: list[str], taken: str) -> None:
    """Real processes, as a user runs them: no traceback, one line naming the problem, exit 2."""
    result = subprocess.run([sys.executable, "-m", "forward_auth", *(a.format(taken=taken) for a in args)],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "FORWARD_AUTH_POLICY_FILE": ""})
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("forward-auth: "), result.stderr


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from ((f"{name} {option}", sub) for option, sub in _options(command))
        else:
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help_and_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    assert [name for name, action in _options(parser) if not action.help] == []
    assert not [name for name, action in _options(parser) if "`" in action.help]  # Markdown marks
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(re.search(rf"^    {command}\b", out, re.MULTILINE) for command in COMMANDS), out
    assert "`" not in out and "{" not in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"forward-auth {__version__}\n"


def test_dev_core_says_where_it_listens() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "forward_auth", "dev-core", "--bind", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.fullmatch(r"SuperTokens dev core listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert url, line
        with urllib.request.urlopen(url.group(1) + "/hello", timeout=5) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
