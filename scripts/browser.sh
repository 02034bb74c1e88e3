#!/usr/bin/env bash
# scripts/browser.sh: make sure a headless Chromium is installed for the web UI's browser
# tests (tasks/ui). Installs Debian's chromium-headless-shell when it is missing and
# installing was asked for (CI=true, set by .ci/run, or GRAFT_SETUP_SERVICES=1); otherwise
# stops naming the command that installs it. GRAFT_CHROMIUM may name another binary.
set -euo pipefail

for b in "${GRAFT_CHROMIUM:-}" chromium-headless-shell chromium; do
	if [[ -n "$b" ]] && command -v "$b" >/dev/null 2>&1; then
		echo "browser: ok ($(command -v "$b"))"
		exit 0
	fi
done

cmd=(apt-get install -y -q chromium-headless-shell)
if [[ "${CI:-}" != "true" && "${GRAFT_SETUP_SERVICES:-}" != "1" ]]; then
	echo "browser.sh: no headless Chromium for the web UI's browser tests." >&2
	echo "  install it:  sudo ${cmd[*]}" >&2
	echo "  (or rerun with GRAFT_SETUP_SERVICES=1 to let this script install it, or set GRAFT_CHROMIUM)" >&2
	exit 1
fi
SUDO=()
[[ "$(id -u)" -eq 0 ]] || SUDO=(sudo)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >"$log" 2>&1; then
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "browser.sh: installing chromium-headless-shell failed" >&2; exit 1; }
fi
echo "browser: installed ($(command -v chromium-headless-shell))"
