"""systemd/install.sh run for real, twice, into a temporary root.

There is no systemd (and no user database we may touch) in a build container, so the system
commands are replaced by stub scripts first on PATH. The stubs log every call and keep a
small fake state (passwd/group files, "enabled"/"active" markers), so the script's "is it
already done?" checks see the effect of its earlier actions, as they would on a real system.
The venv interpreter is a stub too: a real `pip install .[device]` would download OpenCV and
numpy; the stub records the exact pip command instead. Everything else is the real script
writing real files under --root.
"""

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from conftest import ROOT as PROJECT

SCRIPT = PROJECT / "systemd" / "install.sh"
MUTATING = ("groupadd", "useradd", "usermod", "chown", "udevadm", "venv", "pip",
            "systemctl daemon-reload", "systemctl enable", "systemctl start", "systemctl restart")

STUBS = {
    "getent": r'''
db="$STATE/$1"; [ -f "$db" ] || exit 2
grep "^$2:" "$db" || exit 2''',
    "groupadd": r'''
name="${@: -1}"; echo "$name:x:990:" >> "$STATE/group"''',
    "useradd": r'''
name="${@: -1}"; groups=""
while [ $# -gt 0 ]; do [ "$1" = --groups ] && groups="$2"; shift; done
echo "$name:x:990:990::/var/lib/edgedet:/usr/sbin/nologin" >> "$STATE/passwd"
echo "$name:x:990:" >> "$STATE/group"
for g in ${groups//,/ }; do sed -i "/^$g:/ s/\$/,$name/; s/:,/:/" "$STATE/group"; done''',
    "usermod": r'''
name="${@: -1}"; g="$3"; sed -i "/^$g:/ s/\$/,$name/; s/:,/:/" "$STATE/group"''',
    "chown": "",
    "udevadm": "",
    "systemctl": r'''
case "$1" in
  is-enabled) [ -f "$STATE/enabled" ] ;;
  is-active) [ -f "$STATE/active" ] ;;
  enable) touch "$STATE/enabled" ;;
  start|restart) touch "$STATE/active" ;;
esac''',
    # The interpreter given with --python: `-m venv [--system-site-packages] DIR` makes a
    # venv whose bin/pip only logs.
    "python-stub": r'''
dir="${@: -1}"; mkdir -p "$dir/bin"
printf '#!/bin/sh\n' > "$dir/bin/python"
printf '#!/bin/sh\necho "pip $*" >> "%s/calls.log"\n' "$STATE" > "$dir/bin/pip"
chmod +x "$dir/bin/python" "$dir/bin/pip"''',
}


def _source_copy(dest):
    """The parts of the project the installer reads, in a tree the test may modify."""
    for name in ("setup.py", "config.yaml", "systemd", "docs/service.md", "app"):
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(str(src), str(dest / name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(str(src), str(dest / name))
    (dest / "training").mkdir()
    (dest / "training" / "__init__.py").write_text("")
    (dest / "models" / "demo").mkdir(parents=True)
    (dest / "models" / "demo" / "model.json").write_text('{"format_version": 1}\n')
    return dest


@pytest.fixture
def env(tmp_path):
    state, stubs = tmp_path / "state", tmp_path / "stubs"
    state.mkdir()
    stubs.mkdir()
    # video exists already (as on most systems); plugdev does not.
    (state / "group").write_text("video:x:44:\n")
    (state / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    for name, body in STUBS.items():
        path = stubs / name
        path.write_text('#!/bin/bash\necho "{} $*" >> "$STATE/calls.log"\n{}\n'.format(
            name.replace("python-stub", "venv"), body))
        path.chmod(0o755)
    environ = dict(os.environ, STATE=str(state), PATH="{}:{}".format(stubs, os.environ["PATH"]))
    return {"state": state, "stubs": stubs, "environ": environ, "root": tmp_path / "root",
            "source": _source_copy(tmp_path / "src")}


def _install(env, *extra):
    log = env["state"] / "calls.log"
    before = log.read_text().splitlines() if log.exists() else []
    command = ["bash", str(SCRIPT), "--source", str(env["source"]), "--root", str(env["root"]),
               "--python", str(env["stubs"] / "python-stub")] + list(extra)
    result = subprocess.run(command, env=env["environ"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    calls = log.read_text().splitlines()[len(before):] if log.exists() else []
    return result.stdout.decode(), calls


def _mutating(calls):
    return [c for c in calls if c.startswith(MUTATING)]


def _snapshot(root):
    """path -> (sha256, mode, mtime_ns) of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(dirpath, name)
            info = os.stat(path)
            with open(path, "rb") as f:
                out[os.path.relpath(path, str(root))] = (
                    hashlib.sha256(f.read()).hexdigest(), stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return out


def test_first_run_installs_everything(env):
    out, calls = _install(env)
    root, source = env["root"], env["source"]
    mutating = _mutating(calls)
    assert "groupadd --system plugdev" in mutating
    assert not any(c.startswith("groupadd --system video") for c in mutating)
    useradd = [c for c in mutating if c.startswith("useradd")]
    assert len(useradd) == 1 and "--system" in useradd[0] and "--groups plugdev,video" in useradd[0]
    assert "edgedet:x:990:" in (env["state"] / "group").read_text()
    assert "plugdev:x:990:edgedet" in (env["state"] / "group").read_text()
    assert "video:x:44:edgedet" in (env["state"] / "group").read_text()
    venv = "{}/opt/edgedet/.venv".format(root)
    assert "venv -m venv --system-site-packages {}".format(venv) in mutating
    assert "pip install --disable-pip-version-check {}[device]".format(source) in mutating
    assert (root / "etc/systemd/system/edgedet.service").read_text() == \
        (source / "systemd/edgedet.service").read_text()
    assert (root / "etc/udev/rules.d/99-edgetpu.rules").read_bytes() == \
        (source / "systemd/99-edgetpu.rules").read_bytes()
    config = root / "etc/edgedet/config.yaml"
    assert config.read_bytes() == (source / "config.yaml").read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert "chown root:edgedet {}.edgedet-tmp".format(config) in mutating
    assert (root / "opt/edgedet/models/demo/model.json").exists()
    assert (root / "opt/edgedet/docs/service.md").exists()
    for expected in ("udevadm control --reload-rules",
                     "udevadm trigger --action=change --subsystem-match=usb --subsystem-match=apex",
                     "systemctl daemon-reload", "systemctl enable edgedet.service"):
        assert expected in mutating
    assert not any(c.startswith(("systemctl start", "systemctl restart")) for c in mutating)
    assert not list(root.rglob("*.edgedet-tmp"))  # atomic copies left nothing behind


def test_second_run_changes_nothing(env):
    _install(env)
    before = _snapshot(env["root"])
    out, calls = _install(env)
    assert _mutating(calls) == []
    assert _snapshot(env["root"]) == before
    assert "nothing to change" in out
    # Only look-ups happened: the user/group checks and the service state queries.
    assert {c.split()[0] + " " + c.split()[1] for c in calls} <= {
        "getent group", "getent passwd", "systemctl is-enabled", "systemctl is-active"}


def test_changes_are_applied_and_user_config_is_kept(env):
    _install(env)
    config = env["root"] / "etc/edgedet/config.yaml"
    config.write_text("app:\n  sources: ['rtsp://cam/1']\n")  # the user's own edit
    (env["state"] / "active").touch()  # the service is running
    with open(str(env["source"] / "app" / "redact.py"), "a") as f:
        f.write("\n# a new version\n")
    out, calls = _install(env)
    assert _mutating(calls) == [
        "pip install --disable-pip-version-check {}[device]".format(env["source"]),
        "systemctl restart edgedet.service"]
    assert config.read_text() == "app:\n  sources: ['rtsp://cam/1']\n"


def test_group_membership_is_repaired(env):
    _install(env)
    group = env["state"] / "group"
    group.write_text(group.read_text().replace("video:x:44:edgedet", "video:x:44:"))
    _, calls = _install(env)
    assert _mutating(calls) == ["usermod --append --groups video edgedet"]


def test_dry_run_changes_nothing(env):
    out, calls = _install(env, "--dry-run", "--prefix", "/srv/edgedet")
    assert _mutating(calls) == []
    assert not env["root"].exists()
    assert "would run: useradd" in out and "would install /etc/systemd/system/edgedet.service" in out
    assert "would run: systemctl enable edgedet.service" in out


def test_prefix_moves_the_unit_paths(env):
    _install(env, "--prefix", "/srv/edgedet")
    unit = (env["root"] / "etc/systemd/system/edgedet.service").read_text()
    assert "ExecStart=/srv/edgedet/.venv/bin/edgedet --config /etc/edgedet/config.yaml --headless" in unit
    assert "WorkingDirectory=/srv/edgedet" in unit and "/opt/edgedet" not in unit
    assert (env["root"] / "srv/edgedet/.venv/bin/pip").exists()


def test_bad_option_is_one_line_exit_2(env):
    result = subprocess.run(["bash", str(SCRIPT), "--prefix", "relative/path", "--dry-run"],
                            env=env["environ"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == \
        "edgedet-install: error: --prefix must be an absolute path, got 'relative/path'"
