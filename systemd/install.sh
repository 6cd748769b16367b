#!/usr/bin/env bash
# Installs edgedet as a systemd service. Idempotent: a second run changes nothing.
#
#   sudo systemd/install.sh [--prefix /opt/edgedet] [--extras device] [--start] [--dry-run]
#
# What it does (each step only when needed):
#   1. groups plugdev + video, system user `edgedet` in both (no login, home /var/lib/edgedet)
#   2. venv at PREFIX/.venv (--system-site-packages, so apt's python3-pycoral /
#      python3-tflite-runtime on a Dev Board are visible), `pip install SOURCE[EXTRAS]`
#      (re-run only when the source changed; a stamp in the venv records what was installed)
#   3. PREFIX/models (the bundles in SOURCE/models) and PREFIX/docs/service.md
#   4. /etc/edgedet/config.yaml from SOURCE/config.yaml, only if absent (never overwritten)
#   5. /etc/systemd/system/edgedet.service and /etc/udev/rules.d/99-edgetpu.rules, then
#      udevadm reload + trigger and systemctl daemon-reload when they changed
#   6. systemctl enable; restart if running and something changed; --start starts it
#
# --root DIR writes every file under DIR instead of / (like DESTDIR) while the commands
# (getent, useradd, systemctl, udevadm) still run as given on PATH. It exists for tests,
# which replace those commands with stubs. --dry-run prints what would change, changes nothing.
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/edgedet
ROOT=""
EXTRAS=device
PYTHON=python3
DRY_RUN=0
START=0
FORCE=0
USER_NAME=edgedet
UNIT_NAME=edgedet.service
CHANGED_UNIT=0
CHANGED_RULES=0
CHANGED_APP=0

die() { echo "edgedet-install: error: $*" >&2; exit 2; }
say() { echo "edgedet-install: $*"; }
trap 'echo "edgedet-install: failed at line $LINENO (exit $?); nothing after it was done" >&2' ERR

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

Options:
  --source DIR     edgedet source tree (default: $SOURCE)
  --prefix DIR     install location (default: /opt/edgedet)
  --root DIR       write files under DIR (tests, image staging)
  --extras LIST    pip extras (default: device; "" on a Dev Board using apt's packages)
  --python PATH    interpreter for the venv (default: python3)
  --start          start the service now (otherwise only enabled)
  --force          reinstall the package even if the source did not change
  --dry-run        print what would change and change nothing
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE="${2:?--source needs a directory}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --extras) EXTRAS="${2?--extras needs a value}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
    --start) START=1; shift ;;
    --force) FORCE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" ;; esac
ROOT="${ROOT%/}"
[ -f "$SOURCE/setup.py" ] || die "$SOURCE is not an edgedet source tree (no setup.py); pass --source"
[ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0), or use --dry-run"
VENV="$PREFIX/.venv"

# Runs a command that changes the system, or only prints it with --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then say "would run: $*"; else say "run: $*"; "$@"; fi
}

# install_file SRC DST MODE [GROUP]: copies atomically when the content differs.
# Returns 0 when DST changed (or would change), 1 when it was already identical.
install_file() {
  local src="$1" dst="$ROOT$2" mode="$3" group="${4:-}"
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    return 1
  fi
  if [ "$DRY_RUN" = 1 ]; then say "would install $2"; return 0; fi
  mkdir -p "$(dirname "$dst")"
  cp "$src" "$dst.edgedet-tmp"
  chmod "$mode" "$dst.edgedet-tmp"
  if [ -n "$group" ]; then run chown "root:$group" "$dst.edgedet-tmp"; fi
  mv -f "$dst.edgedet-tmp" "$dst"
  say "installed $2"
  return 0
}

ensure_user() {
  local group
  for group in plugdev video; do
    getent group "$group" >/dev/null || run groupadd --system "$group"
  done
  if ! getent passwd "$USER_NAME" >/dev/null; then
    run useradd --system --user-group --no-create-home --home-dir /var/lib/edgedet \
      --shell /usr/sbin/nologin --groups plugdev,video --comment "edgedet service" "$USER_NAME"
    return
  fi
  local members
  for group in plugdev video; do
    members="$(getent group "$group" | cut -d: -f4)"  # name:x:gid:member1,member2
    case ",$members," in
      *",$USER_NAME,"*) ;;
      *) run usermod --append --groups "$group" "$USER_NAME" ;;
    esac
  done
}

source_digest() {
  (cd "$SOURCE" && find setup.py app training -type f \( -name '*.py' -o -name 'setup.py' \) \
     | LC_ALL=C sort | xargs sha256sum; echo "extras=$EXTRAS") | sha256sum | cut -d' ' -f1
}

ensure_venv() {
  local stamp="$ROOT$VENV/.edgedet-installed" digest spec="$SOURCE"
  if [ ! -x "$ROOT$VENV/bin/python" ]; then
    run "$PYTHON" -m venv --system-site-packages "$ROOT$VENV"
  fi
  digest="$(source_digest)"
  if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return
  fi
  [ -z "$EXTRAS" ] || spec="$SOURCE[$EXTRAS]"
  run "$ROOT$VENV/bin/pip" install --disable-pip-version-check "$spec"
  if [ "$DRY_RUN" = 0 ]; then
    echo "$digest" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
  fi
  CHANGED_APP=1
}

install_tree() {  # install_tree SRC_DIR DST_DIR: every file, mode 0644
  local rel
  [ -d "$1" ] || return 0
  while IFS= read -r rel; do
    if install_file "$1/$rel" "$2/$rel" 0644; then CHANGED_APP=1; fi
  done < <(cd "$1" && find . -type f | sed 's#^\./##' | LC_ALL=C sort)
}

install_config() {
  if [ -e "$ROOT/etc/edgedet/config.yaml" ]; then
    return
  fi
  if [ "$DRY_RUN" = 0 ]; then mkdir -p "$ROOT/etc/edgedet"; fi
  install_file "$SOURCE/config.yaml" /etc/edgedet/config.yaml 0640 "$USER_NAME" || true
}

install_unit_and_rules() {
  local unit
  unit="$(mktemp)"
  # The shipped unit names /opt/edgedet; another --prefix is substituted in.
  sed "s#/opt/edgedet#$PREFIX#g" "$SOURCE/systemd/edgedet.service" > "$unit"
  if install_file "$unit" "/etc/systemd/system/$UNIT_NAME" 0644; then CHANGED_UNIT=1; fi
  rm -f "$unit"
  if install_file "$SOURCE/systemd/99-edgetpu.rules" /etc/udev/rules.d/99-edgetpu.rules 0644; then
    CHANGED_RULES=1
  fi
}

apply_to_system() {
  if [ "$CHANGED_RULES" = 1 ]; then
    run udevadm control --reload-rules
    # Re-apply the rules to a Coral that is already plugged in.
    run udevadm trigger --action=change --subsystem-match=usb --subsystem-match=apex
  fi
  [ "$CHANGED_UNIT" = 0 ] || run systemctl daemon-reload
  systemctl is-enabled --quiet "$UNIT_NAME" || run systemctl enable "$UNIT_NAME"
  if systemctl is-active --quiet "$UNIT_NAME"; then
    if [ $((CHANGED_UNIT + CHANGED_APP)) -gt 0 ]; then run systemctl restart "$UNIT_NAME"; fi
  elif [ "$START" = 1 ]; then
    run systemctl start "$UNIT_NAME"
  fi
}

say "source $SOURCE -> ${ROOT}$PREFIX${ROOT:+ (root $ROOT)}"
ensure_user
ensure_venv
install_tree "$SOURCE/models" "$PREFIX/models"
if install_file "$SOURCE/docs/service.md" "$PREFIX/docs/service.md" 0644; then :; fi
install_config
install_unit_and_rules
apply_to_system
if [ $((CHANGED_UNIT + CHANGED_RULES + CHANGED_APP)) -eq 0 ]; then
  say "nothing to change"
fi
say "done. Config: /etc/edgedet/config.yaml; logs: journalctl -u edgedet -f"
