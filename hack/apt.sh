# Sourced by the hack/ scripts. apt_ensure PKG...: installs those of the Debian packages that are
# not installed yet (one apt-get run; nothing when all are there). The array apt_extra, when
# set, is passed to that apt-get install too (e.g. `pkg-` to remove one).
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" ${apt_extra[@]+"${apt_extra[@]}"} >/dev/null
}
