#!/usr/bin/env bash
# Installs Debian's asterisk core sounds (human recordings, CC-BY-SA-3.0) and
# their transcripts, which the tests and benchmarks use as real speech, and
# chromium with its driver, which the web page's test drives.
set -euo pipefail
packages=(asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-core-sounds-fr-wav asterisk-core-sounds-fr
  chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing test recordings: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
