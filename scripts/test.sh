#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing (Debian packages, a venv with
# .[test]), then runs lint, types and tests. The lab (NSD, SMTP peers, Prometheus) is started by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(nsd unbound ldnsutils openssl postfix prometheus chromium fonts-dejavu-core buildah debootstrap prometheus-blackbox-exporter wrk iproute2 libidn12 libgnutls-dane0 libgnutls30 libidn2-0 libpcre2-8-0 libdb5.3 libnsl2 nftables)
need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "== installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Postfix is only here for smtp-sink: no mail system configuration.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV="${MX_EXPORTER_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
echo "== installing mx-exporter[test] into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
export PATH="$PWD/$VENV/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict)"
mypy
echo "== pytest"
mkdir -p test-output
pytest -p no:cacheprovider "$@"
