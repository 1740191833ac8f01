#!/usr/bin/env bash
# Fetch the real-world broken and odd image files used by tests/test_corpus.py.
#
# Two Debian packages are downloaded with `apt-get download` (never installed)
# and only their test-image folders are extracted with `dpkg -x` into
# tests/corpora/debian/ (gitignored):
#
#   gdk-pixbuf-tests  -> debian/gdk-pixbuf/              bombs, truncated files, CVE crashers
#                        debian/gdk-pixbuf/test-images/   fail/, randomly-modified/, reftests/, gif-test-suite/
#   golang-1.19-src   -> debian/golang/png-testdata/      PngSuite subset, invalid crc/zlib/truncated PNGs
#                        debian/golang/image-testdata/    progressive, CMYK, subsampled JPEGs
#
# Idempotent: a package already extracted at the same version is skipped, so
# re-runs work offline. Exits non-zero if any package could not be had; the
# corpus tests then skip with a visible reason.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dest="${CORPUS_DIR:-$here/debian}"
tries=10        # apt may be busy (another install holds the lock): wait and retry
wait_seconds=15

log() { echo "corpora/fetch.sh: $*" >&2; }

retry() {
  local i
  for ((i = 1; i <= tries; i++)); do
    if "$@"; then return 0; fi
    log "'$*' failed (attempt $i/$tries; apt may be locked), retrying in ${wait_seconds}s"
    sleep "$wait_seconds"
  done
  return 1
}

candidate_version() {
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'
}

ensure_lists() {
  # apt-cache knows nothing until `apt-get update` has run once on this machine.
  local v
  v="$(candidate_version "$1")"
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    retry apt-get update -qq >/dev/null || return 1
  fi
}

# $1 package, then pairs of "<path inside the package>" "<folder under $dest>".
# A path ending in /* copies only the non-executable files at that level (the
# images next to gdk-pixbuf's test programs), not the programs or sub-folders.
fetch() (  # a subshell: its EXIT trap removes the download folder
  package="$1"; shift
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || { log "apt-get/dpkg not available"; return 1; }
  ensure_lists "$package" || { log "cannot update apt lists"; return 1; }
  version="$(candidate_version "$package")"
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    log "package $package is not available from this system's apt sources"
    return 1
  fi
  stamp="$dest/.$package.version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
    log "$package $version already extracted"
    return 0
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"  # apt's _apt sandbox user must be able to write the .deb
  (cd "$work" && retry apt-get download -qq -o APT::Sandbox::User=root "$package=$version") || { log "cannot download $package"; return 1; }
  dpkg -x "$work"/*.deb "$work/root"
  while [ $# -gt 0 ]; do
    src="$1" out="$dest/$2"; shift 2
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    if [[ "$src" == */\* ]]; then
      find "$work/root/${src%/\*}" -maxdepth 1 -type f ! -perm -u+x -exec cp -p {} "$out.tmp/" \;
    else
      cp -rp "$work/root/$src/." "$out.tmp/"
    fi
    if [ -d "$out" ] && [[ "$src" == */\* ]]; then
      # the top-level copy shares its folder with test-images/: replace only the files
      find "$out" -maxdepth 1 -type f -delete
      cp -p "$out.tmp"/* "$out/" && rm -rf "$out.tmp"
    else
      rm -rf "$out" && mkdir -p "$(dirname "$out")" && mv "$out.tmp" "$out"
    fi
  done
  echo "$version" >"$stamp"
  log "$package $version extracted into $dest"
)

mkdir -p "$dest"
status=0
fetch gdk-pixbuf-tests \
  usr/libexec/installed-tests/gdk-pixbuf/test-images gdk-pixbuf/test-images \
  'usr/libexec/installed-tests/gdk-pixbuf/*' gdk-pixbuf \
  || status=1
fetch golang-1.19-src \
  usr/share/go-1.19/src/image/png/testdata golang/png-testdata \
  usr/share/go-1.19/src/image/testdata golang/image-testdata \
  || status=1
exit "$status"
