#!/usr/bin/env bash
# perfdhcp benchmark: the example's full loop (DHCP server + NATS server +
# responder) against ISC Kea with the same reservations, in the same run.
#
#   sudo example/perf/run.sh            # from the repository root; ~10 min
#   sudo REPEAT=1 PERIOD=3 example/perf/run.sh   # quick look
#
# Not run by CI. Needs root, Linux, go, iproute2, taskset, setsid, perfdhcp
# (Debian package kea-admin) and kea-dhcp4 (Debian kea-dhcp4-server; stop
# the daemon the package may start, the script only starts its own).
#
# What it does:
#   - builds the example binary;
#   - writes HOSTS reservations (52:54:00:ab:00:00 upwards, addresses
#     198.18.16.0 upwards in 198.18.0.0/16) as an example hosts file and as
#     a Kea configuration (memfile, reservations in the subnet, no pools);
#   - creates two network namespaces joined by a veth pair: the servers on
#     198.18.0.1 (Kea), .3 (loop), .4 (loopoff), .5 (inproc), perfdhcp on
#     198.18.0.2. perfdhcp sends unicast with giaddr = its own address, i.e.
#     it plays a relay agent; the servers answer the relay (giaddr:67), the
#     DHCP server runs in UDP mode (-udp);
#   - starts every variant at once, all server processes pinned together on
#     SERVER_CPU, perfdhcp on CPU CLIENT_CPU (taskset); a variant that is
#     not measured at the moment is idle;
#   - per repetition: searches each variant's highest rate with fewer than
#     MAX_DROP % of DORAs lost (rates growing by GROWTH, then bisection to
#     RESOLUTION %), taking one PERIOD-second step of each variant in turn
#     so that all see the same load from the rest of the machine; then runs
#     DELAY_RATE DORA/s for DELAY_PERIOD seconds against each for the
#     average DISCOVER->OFFER delay, and LOAD_RATE DORA/s for 10 s for the
#     CPU per DORA at the same load (less noisy than at each one's maximum);
#   - first warms every variant up (and reports how long it took): all
#     clients are new, Kea allocates leases and the DHCP server has not
#     answered any of them yet (its not-found budget, -not-found-rate, only
#     limits them after not-found answers), so WARM_RATE DORA/s runs in 10 s steps until
#     one loses < MAX_DROP %;
#   - CPU per DORA is the run time delta (/proc/<pid>/task/*/schedstat,
#     in ns, summed over the threads) of the variant's server processes
#     over the measured run, divided by the completed DORAs. Not utime+stime from /proc/<pid>/stat: with
#     tick-based accounting (CONFIG_TICK_CPU_ACCOUNTING, NO_HZ_IDLE) a
#     process that wakes briefly from idle is often charged the whole tick,
#     which at low rates charged the three processes of the loop up to 4
#     times the time they ran; lookups per DORA come from the DHCP server's
#     /metrics (tinkerbell_dhcp_lookups_total) when the example has
#     -http-addr;
#   - prints one table of medians over the repetitions; the ratios are
#     medians of the per-repetition ratios against Kea (same run).
#
# Variants (VARIANTS, space separated):
#   kea     kea-dhcp4 2.2, memfile (persist false), single-threaded
#   loop    -server, -responder -hosts, and the DHCP server -udp ... LOOP_FLAGS
#   loopoff the full loop with OFF_FLAGS added (availability features off,
#           e.g. OFF_FLAGS="-min-lookup-interval -1s -negative-ttl -1s
#           -not-found-rate -1"); skipped when OFF_FLAGS is empty
#   base    the full loop built from another commit (BASE_REF, e.g. a
#           release tag), default flags: how much a change gained or lost
#   inproc  the DHCP server with the hosts file linked in (the example's
#           -in-process, or INPROC_FLAGS): the ceiling of the loop
#   raw     not a DHCP server: the baseline of the hop. A bare nats.go
#           request-reply (example/perf/rawnats: requester, -server and an
#           echo replier, all on SERVER_CPU, payloads of the wire's sizes)
#           at DELAY_RATE, LOAD_RATE and the loop's max rate of the
#           repetition; its own table gives CPU per request (all three
#           processes) and the average round trip
#
# The machine may be shared: the script runs in its own session and raises
# that session's scheduler autogroup priority (AUTOGROUP_NICE) so that the
# processes measured are not starved by unrelated work; everything else
# keeps its priority. It removes its namespaces and stops its processes (by
# PID) on exit, also on failure or interrupt.
set -euo pipefail

# ---- knobs (environment) ----
HOSTS=${HOSTS:-10000}               # reserved MACs
SERVER_CPU=${SERVER_CPU:-1}         # core for all server processes
CLIENT_CPU=${CLIENT_CPU:-0}         # core for perfdhcp
PERIOD=${PERIOD:-5}                 # seconds per rate step
REPEAT=${REPEAT:-3}                 # repetitions (medians are reported)
START_RATE=${START_RATE:-4000}      # first rate tried (DORA/s)
GROWTH=${GROWTH:-1.3}               # rate factor while steps pass
RESOLUTION=${RESOLUTION:-5}         # bisection stops at this gap (%)
MAX_DROP=${MAX_DROP:-1}             # lost DORAs allowed (%)
DELAY_RATE=${DELAY_RATE:-1000}      # rate of the delay run
DELAY_PERIOD=${DELAY_PERIOD:-10}    # seconds of the delay run
LOAD_RATE=${LOAD_RATE:-4000}        # fixed rate for comparing CPU per DORA (10 s runs)
WARM_RATE=${WARM_RATE:-2000}        # warm-up rate (DORA/s), 10 s runs ...
WARM_TIMEOUT=${WARM_TIMEOUT:-400}   # ... until one loses < MAX_DROP %, at most this long (s)
AUTOGROUP_NICE=${AUTOGROUP_NICE:--15}
VARIANTS=${VARIANTS:-kea loop loopoff inproc raw}
LOOP_FLAGS=${LOOP_FLAGS:-}          # extra DHCP server flags (full loop)
OFF_FLAGS=${OFF_FLAGS:-}            # extra flags that turn features off
INPROC_FLAGS=${INPROC_FLAGS:-}      # DHCP server flags for an in-process backend
BASE_REF=${BASE_REF:-}              # git commit of the base variant
KEEP=${KEEP:-0}                     # 1: keep the work directory
OUT=${OUT:-}                        # also append the raw step log here

# ---- run in a session (and autogroup) of our own ----
if [[ ${TB_PERF_INNER:-} != 1 ]]; then
	export TB_PERF_INNER=1 TB_PERF_PIDFILE
	TB_PERF_PIDFILE=$(mktemp /tmp/tbperf-pid.XXXXXX)
	setsid "$0" "$@" &
	inner=$!
	forward() {
		local p
		p=$(cat "$TB_PERF_PIDFILE" 2>/dev/null || true)
		kill -TERM "${p:-$inner}" 2>/dev/null || true
	}
	trap forward INT TERM HUP
	rc=0
	while kill -0 "$inner" 2>/dev/null; do
		wait "$inner" && rc=0 || rc=$?
	done
	rm -f "$TB_PERF_PIDFILE"
	exit "$rc"
fi
echo $$ >"$TB_PERF_PIDFILE"

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(id -u) == 0 ]] || die "run as root (network namespaces, port 67)"
for c in go ip taskset perfdhcp kea-dhcp4 awk; do
	command -v "$c" >/dev/null || die "$c not found"
done
echo "$AUTOGROUP_NICE" >/proc/self/autogroup 2>/dev/null || log "cannot set autogroup nice; continuing"

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/tbperf.XXXXXX)
tag=$$
ns_s=tbp${tag}s ns_c=tbp${tag}c       # namespace names (<= 15 bytes)
if_s=tbp${tag}s0 if_c=tbp${tag}c0
cli_ip=198.18.0.2
pids=()        # every server process started
steplog=$work/steps.tsv

stop_servers() {
	local p
	((${#pids[@]})) || return 0
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for _ in $(seq 50); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	stop_servers
	ip netns del "$ns_s" 2>/dev/null || true
	ip netns del "$ns_c" 2>/dev/null || true
	if [[ $KEEP == 1 || $rc != 0 ]]; then
		log "work directory kept: $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- build ----
log "building the example"
(cd "$repo" && go build -o "$work/tb-example" ./example && go build -o "$work/rawnats" ./example/perf/rawnats)
bin=$work/tb-example
if [[ " $VARIANTS " == *" base "* ]]; then
	[[ -n $BASE_REF ]] || die "variant base needs BASE_REF"
	log "building the example at $BASE_REF"
	mkdir "$work/base-src"
	git -C "$repo" archive "$BASE_REF" | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -o "$work/tb-base" ./example)
fi

# ---- reservations: example hosts file, MAC list, Kea configuration ----
# Host i: MAC 52:54:00:ab:HH:LL (HHLL = i), address 198.18.0.0 + 4096 + i.
log "writing $HOSTS reservations"
awk -v n="$HOSTS" 'BEGIN {
	print "# generated by example/perf/run.sh"
	print "hosts:"
	for (i = 0; i < n; i++) {
		a = 4096 + i
		printf "  \"52:54:00:ab:%02x:%02x\":\n", int(i / 256), i % 256
		printf "    IPAddress: 198.18.%d.%d\n", int(a / 256), a % 256
		print "    SubnetMask: 255.255.0.0"
		print "    DefaultGateway: 198.18.0.1"
		print "    NameServers: [198.18.0.1]"
		print "    LeaseTime: 3600"
	}
}' >"$work/hosts.yaml"
awk -v n="$HOSTS" 'BEGIN { for (i = 0; i < n; i++) printf "52:54:00:ab:%02x:%02x\n", int(i / 256), i % 256 }' >"$work/macs.txt"
{
	cat <<EOF
{
"Dhcp4": {
  "interfaces-config": { "interfaces": [ "$if_s/198.18.0.1" ], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": false },
  "multi-threading": { "enable-multi-threading": false },
  "valid-lifetime": 3600,
  "host-reservation-identifiers": [ "hw-address" ],
  "reservations-global": false,
  "reservations-in-subnet": true,
  "reservations-out-of-pool": true,
  "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$work/kea.log" } ], "severity": "WARN" } ],
  "subnet4": [ {
    "id": 1,
    "subnet": "198.18.0.0/16",
    "option-data": [
      { "name": "routers", "data": "198.18.0.1" },
      { "name": "domain-name-servers", "data": "198.18.0.1" }
    ],
    "reservations": [
EOF
	awk -v n="$HOSTS" 'BEGIN {
		for (i = 0; i < n; i++) {
			a = 4096 + i
			printf "      { \"hw-address\": \"52:54:00:ab:%02x:%02x\", \"ip-address\": \"198.18.%d.%d\" }%s\n",
				int(i / 256), i % 256, int(a / 256), a % 256, (i < n - 1 ? "," : "")
		}
	}'
	cat <<EOF
    ]
  } ]
}
}
EOF
} >"$work/kea.json"

# ---- network: servers in ns_s, perfdhcp in ns_c ----
# Each variant has its own server address on the same veth (all variants
# run side by side, idle when not measured); perfdhcp is the relay at
# 198.18.0.2.
declare -A vaddr=([kea]=198.18.0.1 [loop]=198.18.0.3 [loopoff]=198.18.0.4 [inproc]=198.18.0.5 [base]=198.18.0.6 [raw]=198.18.0.7)
declare -A vport=([loop]=14222 [loopoff]=14223 [base]=14224 [raw]=14225)
declare -A vhttp=([loop]=127.0.0.1:19090 [loopoff]=127.0.0.1:19091 [inproc]=127.0.0.1:19092)
log "creating namespaces $ns_s and $ns_c"
ip netns add "$ns_s"
ip netns add "$ns_c"
ip link add "$if_s" netns "$ns_s" type veth peer name "$if_c" netns "$ns_c"
for a in "${vaddr[@]}"; do ip -n "$ns_s" addr add "$a/24" dev "$if_s"; done
ip -n "$ns_c" addr add "$cli_ip/24" dev "$if_c"
for n in "$ns_s" "$ns_c"; do ip -n "$n" link set lo up; done
ip -n "$ns_s" link set "$if_s" up
ip -n "$ns_c" link set "$if_c" up

# ---- variants ----
declare -A vpids vnames # server PIDs and their names, per variant

# in_srv VARIANT NAME CMD...: runs a server process in the server namespace
# on SERVER_CPU and records its PID (ip netns exec, taskset and env exec,
# so $! is the server itself).
in_srv() {
	local v=$1 name=$2
	shift 2
	ip netns exec "$ns_s" taskset -c "$SERVER_CPU" "$@" >"$work/$v-$name.log" 2>&1 &
	pids+=($!)
	vpids[$v]+="$! "
	vnames[$v]+="$name "
}

# The DHCP server's /metrics, when the example has them, give the backend
# lookups per DORA.
metrics=0
"$bin" -h 2>&1 | grep -q -- '-http-addr' && metrics=1

# http_flags VARIANT prints the DHCP server's -http-addr flag, if any.
http_flags() {
	((metrics)) && echo "-http-addr ${vhttp[$1]}"
	return 0
}

# lookups VARIANT prints the DHCP server's backend lookups so far
# (tinkerbell_dhcp_lookups_total), or nothing.
lookups() {
	((metrics)) && [[ -n ${vhttp[$1]:-} ]] || return 0
	ip netns exec "$ns_s" curl -sf --max-time 5 "http://${vhttp[$1]}/metrics" 2>/dev/null |
		awk '$1 == "tinkerbell_dhcp_lookups_total" { printf "%d", $2 }' || true
}

# inproc_flags prints the DHCP server flags for an in-process backend, or
# nothing when the example has none.
inproc_flags() {
	if [[ -n $INPROC_FLAGS ]]; then
		echo "$INPROC_FLAGS"
	elif "$bin" -h 2>&1 | grep -q -- '-in-process'; then
		echo "-in-process -hosts $work/hosts.yaml"
	fi
}

start_variant() {
	local v=$1 a=${vaddr[$1]}
	case $v in
	kea)
		ip netns exec "$ns_s" kea-dhcp4 -t "$work/kea.json" >"$work/kea-check.log" 2>&1 ||
			die "Kea rejects its configuration: $(tail -3 "$work/kea-check.log")"
		in_srv kea kea env KEA_PIDFILE_DIR="$work" KEA_LOCKFILE_DIR="$work" kea-dhcp4 -c "$work/kea.json"
		;;
	loop | loopoff)
		local extra=$LOOP_FLAGS url=nats://127.0.0.1:${vport[$v]}
		[[ $v == loopoff ]] && extra="$LOOP_FLAGS $OFF_FLAGS"
		in_srv "$v" nats "$bin" -server -nats-addr "127.0.0.1:${vport[$v]}"
		in_srv "$v" responder "$bin" -responder -nats-url "$url" -hosts "$work/hosts.yaml"
		# shellcheck disable=SC2046,SC2086 # extra flags are words
		in_srv "$v" dhcp "$bin" -udp "$a:67" -server-addr "$a" -nats-url "$url" $(http_flags "$v") $extra
		;;
	base)
		local url=nats://127.0.0.1:${vport[$v]}
		in_srv "$v" nats "$work/tb-base" -server -nats-addr "127.0.0.1:${vport[$v]}"
		in_srv "$v" responder "$work/tb-base" -responder -nats-url "$url" -hosts "$work/hosts.yaml"
		in_srv "$v" dhcp "$work/tb-base" -udp "$a:67" -server-addr "$a" -nats-url "$url"
		;;
	raw)
		in_srv raw nats "$bin" -server -nats-addr "127.0.0.1:${vport[raw]}"
		sleep 0.5
		in_srv raw echo "$work/rawnats" -echo -url "nats://127.0.0.1:${vport[raw]}"
		;;
	inproc)
		# shellcheck disable=SC2046,SC2086
		in_srv "$v" dhcp "$bin" -udp "$a:67" -server-addr "$a" $(http_flags "$v") $(inproc_flags) $LOOP_FLAGS
		;;
	*) die "unknown variant $v" ;;
	esac
}

# proc_cpu VARIANT prints "name µs" (time on a CPU so far) for each of its
# server processes, one a line.
proc_cpu() {
	local p n names
	read -r -a names <<<"${vnames[$1]}"
	local i=0
	for p in ${vpids[$1]}; do
		kill -0 "$p" 2>/dev/null &&
			n=$(cat "/proc/$p"/task/*/schedstat 2>/dev/null | awk '{ t += $1 } END { printf "%d", t / 1000 }') || die "$1: server process $p (${names[i]}) died (see $work/$1-*.log)"
		printf '%s %s\n' "${names[i]}" "$n"
		i=$((i + 1))
	done
}

# dora VARIANT RATE SECONDS: one perfdhcp run against VARIANT; prints
#   discovers offers requests acks avg_offer_delay_ms cpu_us split min_offer_delay_ms
# where split is name:µs,... per server process of the variant.
dora() {
	local v=$1 rate=$2 secs=$3 before after out split
	before=$(proc_cpu "$v") || return 1
	out=$(timeout $((secs + 20)) ip netns exec "$ns_c" taskset -c "$CLIENT_CPU" \
		perfdhcp -4 -r "$rate" -p "$secs" -W 300000 -M "$work/macs.txt" -l "$cli_ip" "${vaddr[$v]}" 2>&1) || true
	after=$(proc_cpu "$v") || return 1
	split=$(paste -d' ' <(printf '%s\n' "$before") <(printf '%s\n' "$after") |
		awk '{ t += $4 - $2; printf "%s%s:%d", (NR > 1 ? "," : ""), $1, $4 - $2 } END { printf " %d", t }')
	printf '== %s %s/s %ss\n%s\n' "$v" "$rate" "$secs" "$out" >>"$work/perfdhcp.out"
	printf '%s\n' "$out" | awk -v cpus="$split" '
		/sent packets:/ { s[++ns] = $3 }
		/received packets:/ { r[++nr] = $3 }
		/avg delay:/ && !d { d = $3 }
		/min delay:/ && !m { m = $3 }
		END { if (ns < 2 || nr < 2) exit 1; split(cpus, c, " "); printf "%d %d %d %d %s %d %s %s\n", s[1], r[1], s[2], r[2], d, c[2], c[1], m }'
}

# wait_ready VARIANT polls with a few exchanges until every one completes.
wait_ready() {
	local deadline=$((SECONDS + 60)) r d a
	while ((SECONDS < deadline)); do
		if r=$(dora "$1" 100 1) && read -r d _ _ a _ <<<"$r" && ((d > 0 && a == d)); then
			return 0
		fi
		proc_cpu "$1" >/dev/null || exit 1
		sleep 0.5
	done
	die "$1 not answering after 60s (see $work/$1-*.log)"
}

# step VARIANT REP KIND RATE SECONDS: one measured run, logged; sets
# step_pass (0/1), step_rate (completed DORA/s), step_us (CPU µs per DORA)
# step_delay and step_min (average and minimum DISCOVER->OFFER delay, ms).
step() {
	local v=$1 rep=$2 kind=$3 rate=$4 secs=$5 r d o q a delay cpu split mindelay drop keptup note="" l0 l1
	l0=$(lookups "$v")
	r=$(dora "$v" "$rate" "$secs") || die "$v: no perfdhcp result (see $work/perfdhcp.out and $work/$v-*.log)"
	l1=$(lookups "$v")
	read -r d o q a delay cpu split mindelay <<<"$r"
	step_lpd=-
	[[ -z $l0 || -z $l1 ]] || step_lpd=$(awk -v l="$((l1 - l0))" -v a="$a" 'BEGIN { printf "%.2f", a ? l / a : 0 }')
	step_rate=$(awk -v a="$a" -v s="$secs" 'BEGIN { printf "%.0f", a / s }')
	step_us=$(awk -v t="$cpu" -v a="$a" 'BEGIN { printf "%.1f", a ? t / a : 0 }')
	step_delay=$delay step_min=$mindelay
	drop=$(awk -v d="$d" -v a="$a" 'BEGIN { printf "%.2f", d ? 100 * (d - a) / d : 100 }')
	keptup=$(awk -v d="$d" -v r="$rate" -v s="$secs" 'BEGIN { print (d >= 0.98 * r * s) ? 1 : 0 }')
	step_pass=$(awk -v x="$drop" -v m="$MAX_DROP" -v k="$keptup" 'BEGIN { print (x < m && k) ? 1 : 0 }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$rep" "$kind" "$rate" "$d" "$o" "$q" "$a" \
		"$drop" "$step_rate" "$step_us" "$delay" "$keptup" "$step_lpd" "$split" >>"$steplog"
	((keptup)) || note=" (perfdhcp sent only $d of $((rate * secs)): client-bound)"
	log "  $v #$rep $kind $rate/s: $step_rate DORA/s done, drops $drop %, $step_us us CPU/DORA, offer delay $delay ms, lookups/DORA $step_lpd$note"
}

# Max-rate search state per variant: lo = highest passing rate, hi = lowest
# failing rate (0: none yet), cur = next rate, best_* = figures at lo.
declare -A lo hi cur best_rate best_us best_lpd delay_ms delay_us delay_min

# advance VARIANT: updates the search after a step; returns 1 when done.
advance() {
	local v=$1 mid
	if ((step_pass)); then
		lo[$v]=${cur[$v]} best_rate[$v]=$step_rate best_us[$v]=$step_us best_lpd[$v]=$step_lpd
	fi
	if ((hi[$v] == 0)); then # growing
		if ((step_pass)); then
			cur[$v]=$(awk -v r="${cur[$v]}" -v g="$GROWTH" 'BEGIN { printf "%d", r * g / 100 + 0.5 }')00
			return 0
		elif ((lo[$v] == 0 && cur[$v] > 500)); then
			cur[$v]=$((cur[$v] / 2)) # the first rate already fails: go down
			return 0
		fi
		hi[$v]=${cur[$v]}
	elif ((!step_pass)); then
		hi[$v]=${cur[$v]}
	fi
	((lo[$v] > 0)) || return 1
	awk -v lo="${lo[$v]}" -v hi="${hi[$v]}" -v res="$RESOLUTION" 'BEGIN { exit !((hi - lo) * 100 > res * lo) }' || return 1
	mid=$(((lo[$v] + hi[$v]) / 200 * 100))
	((mid > lo[$v] && mid < hi[$v])) || return 1
	cur[$v]=$mid
}

# raw_step REP KIND RATE SECONDS: one run of the bare request-reply
# baseline, logged and appended to $work/raw-results.
raw_step() {
	local rep=$1 kind=$2 rate=$3 secs=$4 before after out n failed cpu rt us
	before=$(proc_cpu raw | awk '{ t += $2 } END { print t }') || return 1
	out=$(timeout $((secs + 20)) ip netns exec "$ns_s" taskset -c "$SERVER_CPU" \
		"$work/rawnats" -url "nats://127.0.0.1:${vport[raw]}" -rate "$rate" -secs "$secs" 2>&1) || die "raw: $out"
	after=$(proc_cpu raw | awk '{ t += $2 } END { print t }') || return 1
	read -r _ n _ failed _ cpu _ rt <<<"$out"
	us=$(awk -v c="$cpu" -v d="$((after - before))" -v n="$n" 'BEGIN { printf "%.1f", n ? c + d / n : 0 }')
	printf '%s %s %s %s %s %s\n' "$rep" "$kind" "$rate" "$us" "$rt" "$failed" >>"$work/raw-results"
	log "  raw #$rep $kind $rate/s: $n requests, $failed failed, $us us CPU/request (requester + NATS server + replier), round trip $rt ms"
}

# Which variants run.
run=()
raw=0
for v in $VARIANTS; do
	case $v in
	kea | loop | base) ;;
	raw)
		raw=1
		continue
		;;
	loopoff) [[ -n $OFF_FLAGS ]] || {
		log "skipping loopoff: OFF_FLAGS is empty"
		continue
	} ;;
	inproc) [[ -n $(inproc_flags) ]] || {
		log "skipping inproc: the example has no in-process backend for the DHCP server (set INPROC_FLAGS)"
		continue
	} ;;
	*) die "unknown variant $v" ;;
	esac
	run+=("$v")
done
((${#run[@]})) || die "no variant to run"
: >"$work/raw-results"
if ((raw)); then
	log "starting raw (bare nats.go request-reply)"
	start_variant raw
fi

printf 'variant\trep\tkind\trate\tdiscovers\toffers\trequests\tacks\tdrop%%\tdone/s\tus/dora\toffer_ms\tkeptup\tlookups/dora\tcpu_us\n' >"$steplog"
: >"$work/results"
for v in "${run[@]}"; do
	log "starting $v on ${vaddr[$v]}"
	start_variant "$v"
done
# Warm-up, also a cold-start figure: every client is new to the servers
# (Kea allocates leases; the DHCP server's admission control limits
# lookups for clients it has not answered yet), so run WARM_RATE DORA/s in
# 10 s steps until one loses < MAX_DROP %.
declare -A warm
for v in "${run[@]}"; do
	wait_ready "$v"
	t0=$SECONDS
	while :; do
		step "$v" 0 warmup "$WARM_RATE" 10
		((step_pass)) && break
		((SECONDS - t0 < WARM_TIMEOUT)) || die "$v still loses $WARM_RATE DORA/s after ${WARM_TIMEOUT}s of warm-up"
	done
	warm[$v]=$((SECONDS - t0))
	log "$v warm: a 10 s run at $WARM_RATE DORA/s lost < $MAX_DROP % after ${warm[$v]} s"
done
log "variants: ${run[*]}; $REPEAT repetition(s), ${PERIOD}s steps taken in turn; servers on CPU $SERVER_CPU, perfdhcp on CPU $CLIENT_CPU"
for rep in $(seq "$REPEAT"); do
	order=("${run[@]}")
	if ((rep % 2 == 0)); then # alternate the order so drifting load hits all alike
		order=()
		for ((i = ${#run[@]} - 1; i >= 0; i--)); do order+=("${run[i]}"); done
	fi
	active=()
	for v in "${order[@]}"; do
		lo[$v]=0 hi[$v]=0 cur[$v]=$START_RATE best_rate[$v]=0 best_us[$v]=0 best_lpd[$v]=-
		active+=("$v")
	done
	# One step of each unfinished search in turn, so that all variants
	# see the same load from the rest of the machine.
	while ((${#active[@]})); do
		next=()
		for v in "${active[@]}"; do
			step "$v" "$rep" max "${cur[$v]}" "$PERIOD"
			advance "$v" && next+=("$v")
			sleep 1
		done
		active=("${next[@]}")
	done
	for v in "${order[@]}"; do
		step "$v" "$rep" delay "$DELAY_RATE" "$DELAY_PERIOD"
		delay_ms[$v]=$step_delay delay_us[$v]=$step_us delay_min[$v]=$step_min
		sleep 1
	done
	if ((raw)); then
		raw_step "$rep" delay "$DELAY_RATE" "$DELAY_PERIOD"
		raw_step "$rep" load "$LOAD_RATE" 10
		((${best_rate[loop]:-0} > 0)) && raw_step "$rep" loopmax "${best_rate[loop]}" "$PERIOD"
	fi
	for v in "${order[@]}"; do
		step "$v" "$rep" load "$LOAD_RATE" 10
		load_us=$step_us
		((step_pass)) || load_us="$step_us*" # did not sustain LOAD_RATE
		printf '%s %s %s %s %s %s %s %s %s\n' "$v" "$rep" "${best_rate[$v]}" "${best_us[$v]}" "${delay_ms[$v]}" "${delay_us[$v]}" "${best_lpd[$v]}" "$load_us" "${delay_min[$v]}" >>"$work/results"
		log "$v #$rep: max ${best_rate[$v]} DORA/s at < $MAX_DROP % drops, ${best_us[$v]} us CPU/DORA; at $DELAY_RATE/s: offer delay ${delay_ms[$v]} ms, ${delay_us[$v]} us CPU/DORA; at $LOAD_RATE/s: $load_us us CPU/DORA"
		sleep 1
	done
done
[[ -z $OUT ]] || cat "$steplog" >>"$OUT"

# ---- table: medians over repetitions; ratios per repetition against Kea ----
echo
echo "perfdhcp relay mode, $HOSTS reserved MACs, servers pinned to CPU $SERVER_CPU, median of $REPEAT run(s)"
echo "(ratio: median over repetitions of ours / Kea in the same repetition)"
echo
awk -v maxdrop="$MAX_DROP" -v drate="$DELAY_RATE" -v lrate="$LOAD_RATE" '
	function median(list,   n, a, i, j, t) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		if (n == 0) return ""
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{
		v = $1; rep = $2
		seen[v] = 1
		rate[v] = rate[v] " " $3; us[v] = us[v] " " $4; dl[v] = dl[v] " " $5; usd[v] = usd[v] " " $6
		if ($7 != "-") lpd[v] = lpd[v] " " $7
		l = $8; if (l ~ /\*$/) { star[v] = 1; sub(/\*$/, "", l) }
		ul[v] = ul[v] " " l; mn[v] = mn[v] " " $9
		R[v, rep] = $3; U[v, rep] = $4; D[v, rep] = $5; L[v, rep] = l; reps[rep] = 1
	}
	END {
		names["kea"] = "Kea 2.2 (memfile, reservations)"
		names["loop"] = "full loop (DHCP + NATS + responder)"
		names["loopoff"] = "full loop, availability features off"
		names["inproc"] = "DHCP server, in-process backend"
		names["base"] = "full loop at BASE_REF"
		printf "| server | DORA/s at < %s %% drops | CPU µs/DORA at max | CPU µs/DORA at %d/s | DISCOVER→OFFER at %d/s: avg, min | CPU µs/DORA at %d/s | lookups/DORA at max |\n", maxdrop, lrate, drate, drate
		print "|---|---|---|---|---|---|---|"
		nv = split("kea loop loopoff inproc base", order, " ")
		for (i = 1; i <= nv; i++) {
			v = order[i]
			if (!(v in seen)) continue
			rr = ""; ru = ""; rd = ""; rl = ""
			if (v != "kea" && ("kea" in seen)) {
				for (rep in reps) if ((v, rep) in R && ("kea", rep) in R && R["kea", rep] > 0 && U["kea", rep] > 0 && D["kea", rep] > 0 && L["kea", rep] > 0) {
					rr = rr " " R[v, rep] / R["kea", rep]; ru = ru " " U[v, rep] / U["kea", rep]; rd = rd " " D[v, rep] / D["kea", rep]; rl = rl " " L[v, rep] / L["kea", rep]
				}
			}
			r = median(rate[v]); u = median(us[v]); d = median(dl[v]); ud = median(usd[v])
			ls = sprintf("%.0f%s", median(ul[v]), (v in star) ? "*" : "")
			rs = sprintf("%d", r); usx = sprintf("%.0f", u); ds = sprintf("%.2f ms, min %.2f", d, median(mn[v]))
			if (rr != "") {
				rs = rs sprintf(" (%.2f×)", median(rr)); usx = usx sprintf(" (%.2f×)", median(ru)); ds = ds sprintf(" (%.2f×)", median(rd)); ls = ls sprintf(" (%.2f×)", median(rl))
			}
			printf "| %s | %s | %s | %s | %s | %.0f | %s |\n", names[v], rs, usx, ls, ds, ud, (v in lpd) ? median(lpd[v]) : "–"
		}
	}' "$work/results"
if [[ -s $work/raw-results ]]; then
	echo
	echo "baseline: bare nats.go request-reply (example/perf/rawnats), requester + NATS server + replier on CPU $SERVER_CPU, median of $REPEAT run(s):"
	echo
	awk -v drate="$DELAY_RATE" -v lrate="$LOAD_RATE" '
		function median(list,   n, a, i, j, t) {
			n = split(list, a, " ")
			for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{ r[$2] = r[$2] " " $3; u[$2] = u[$2] " " $4; t[$2] = t[$2] " " $5; f[$2] += $6 }
		END {
			print "| requests/s | CPU µs per request | average round trip | failed |"
			print "|---|---|---|---|"
			n = split("delay load loopmax", k, " ")
			for (i = 1; i <= n; i++) if (k[i] in r)
				printf "| %d%s | %.0f | %.3f ms | %d |\n", median(r[k[i]]), k[i] == "loopmax" ? " (the loop'"'"'s max)" : "", median(u[k[i]]), median(t[k[i]]), f[k[i]]
		}' "$work/raw-results"
fi
echo
echo "* = lost >= $MAX_DROP % at $LOAD_RATE DORA/s in some repetition"
echo
echo "per-repetition results (variant rep max_rate us/dora delay_ms us/dora@${DELAY_RATE} lookups/dora@max us/dora@${LOAD_RATE} min_delay_ms):"
cat "$work/results"
echo
echo "warm-up (cold start: 10,000 new clients at $WARM_RATE DORA/s until a 10 s run loses < $MAX_DROP %):"
for v in "${run[@]}"; do echo "  $v: ${warm[$v]} s"; done
echo
echo "steps (drop% = DORAs not completed; keptup 0 = perfdhcp could not send the rate; cpu_us per process, µs on a CPU):"
column -t "$steplog" 2>/dev/null || cat "$steplog"
