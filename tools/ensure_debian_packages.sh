#!/usr/bin/env bash
# Installs the Debian packages the tests, benchmarks and linters use:
# - asterisk's core sounds (human recordings, CC-BY-SA-3.0) and their
#   transcripts: real speech for tests and benchmarks (es, it and ru digits:
#   bench.word_timing's word-time figures in five languages);
# - asterisk's music on hold (CC-BY-SA-3.0): the music passage of the
#   realistic bench recording (bench/media.py);
# - chromium and its driver: the web pages' tests;
# - PostgreSQL 15: the job store's tests on a real server (tests/postgres.py);
# - node and npm: buf (the proto linter) and the Node client;
# - Go with protoc and its Go plugins and Debian's Go gRPC libraries: the Go client
#   (golang/protobuf 1.5, which speaks the generated APIv2 messages; 1.3 panics on them).
set -euo pipefail
packages=(
  asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-core-sounds-fr-wav asterisk-core-sounds-fr
  asterisk-core-sounds-es-wav asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav
  asterisk-moh-opsound-wav
  chromium chromium-driver
  postgresql
  golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# Any node with npm will do (a machine may have NodeSource's, which Debian's npm conflicts with).
command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
