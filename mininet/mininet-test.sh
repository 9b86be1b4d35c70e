#!/usr/bin/env bash
# The scripted Mininet scenario (mininet/scenario.py) as a test step.
#
# Runs only as root on Linux and says plainly why it skips otherwise.
# Installs what Mininet and the scenario need with apt-get when it is
# missing, checks that bin/ holds the programs (make build), runs the
# scenario with the system Python (the one with the mininet module; a
# pyenv/venv python3 earlier on PATH usually lacks it) and ends with one
# line: "mininet: 2 passed, 0 failed" (the bots' scenario and the terminal
# client's, mininet/tui_scenario.py), or how many failed.
#
# Extra arguments go to scenario.py (e.g. --delay-mode relay, --keep-logs).
# Environment: BIN (default: <repo>/bin), MININET_PYTHON (default
# /usr/bin/python3), MININET_TIMEOUT (outer bound in seconds, default 300).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$repo/bin}
python=${MININET_PYTHON:-/usr/bin/python3}
outer=${MININET_TIMEOUT:-300}

skip() {
	echo "skipping the Mininet scenario: $*"
	exit 0
}

fail() {
	echo "mininet-test: $*" >&2
	echo "mininet: 0 passed, 1 failed"
	exit 1
}

[ "$(uname -s)" = Linux ] || skip "Mininet needs Linux (this is $(uname -s))"
[ "$(id -u)" -eq 0 ] || skip "Mininet needs root (run as root, e.g. sudo make mininet-test)"

# What each package provides that the scripts use: mininet (mnexec, the
# python3 module, and through its dependencies iperf, socat, telnet,
# cgroup-tools), iputils-ping (ping: scenario's delay check, Mininet's
# pingall), bridge-utils (brctl: LinuxBridge), ethtool (TCIntf turns offloads
# on/off), net-tools (ifconfig: Mininet configures interfaces with it),
# iproute2 (ip, tc for htb, ss).
have_mininet() {
	command -v mnexec >/dev/null 2>&1 &&
		[ -x "$python" ] &&
		(cd / && "$python" -I -c 'import mininet.net, mininet.nodelib') >/dev/null 2>&1
}

missing=()
have_mininet || missing+=(mininet)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v brctl >/dev/null 2>&1 || missing+=(bridge-utils)
command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)
command -v ifconfig >/dev/null 2>&1 || missing+=(net-tools)
{ command -v ip && command -v tc && command -v ss; } >/dev/null 2>&1 || missing+=(iproute2)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)

if [ ${#missing[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		skip "missing ${missing[*]} and no apt-get to install them (install Mininet by hand)"
	fi
	echo "mininet-test: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null || fail "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		fail "apt-get install ${missing[*]} failed"
	have_mininet || fail "Mininet installed, but $python cannot import the mininet module"
fi

for prog in central chatserver chat linkdelay; do
	[ -x "$bin/$prog" ] || fail "$bin/$prog is missing: run 'make build' first"
done

cd "$repo" || fail "cannot cd to $repo"
# The scenario's own checks, on fake hosts: quick, and no network.
"$python" -I mininet/test_ping_check.py -q || fail "mininet/test_ping_check.py failed"
passed=0
failed=0
# The bots' scenario, then the terminal client's (tmux in c1 and c2).
for scenario in "mininet/scenario.py --bin $bin $*" "mininet/tui_scenario.py --bin $bin"; do
	# shellcheck disable=SC2086 # the words of $scenario are its arguments
	timeout --foreground -k 60 "$outer" "$python" -I $scenario
	status=$?
	if [ $status -eq 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		[ $status -eq 124 ] && echo "mininet-test: ${scenario%% *} did not finish within ${outer} s" >&2
	fi
done
echo "mininet: $passed passed, $failed failed"
[ $failed -eq 0 ]
