#!/bin/bash
# The smoke subset of dockless in a Debian guest (run by `scripts/test-guest smoke` as the guest's
# shared script, as root after systemd is up): pull from the host's test registry, run, limits
# (memory/OOM, pids, CPU, timeout), gc after a SIGKILLed runner, leftovers; first as root, then as
# the ordinary user `tester` in a login session (runuser -l: a session-N.scope, not delegated)
# and in a transient service of its own systemd (systemd-run --user: below user@1000.service,
# delegated). Each check prints what it ran and its output, and one line of the summary at the end:
#   PASS|FAIL  <who>  <check>  <the failure's message>
# Exit status: 0 when every check passed, 1 otherwise (the summary says which).
#
# Usage (in the guest): smoke.sh [root|rootless WHO]   (rootless WHO is how the root part
# re-enters this script as the test user)
# shellcheck disable=SC2016 # the containers' shell commands are in single quotes on purpose
set -u
readonly REG=10.0.2.2:5000
readonly IMAGE=$REG/busybox:latest
# 60 layers (busybox + 59 of one file each: /layers/2 .. /layers/60), pushed by test-guest smoke.
readonly LAYERS60=$REG/layers60:latest
# The demo Keboola component (examples/demo-component), pushed by test-guest smoke.
readonly DEMO=$REG/demo-component:guest
readonly SHARE=${GUEST_SHARE:-/run/test-guest/in}
readonly RESULTS=${SMOKE_RESULTS:-/tmp/smoke-results}
readonly DOCKLESS=/usr/local/bin/dockless
readonly TEST_USER=tester
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Every dockless command gets the registry flag through its environment.
export DOCKLESS_INSECURE_REGISTRIES=$REG

WHO=root
OUT=$(mktemp /tmp/smoke-out.XXXXXX)
chmod 0644 "$OUT"

STARTED=$SECONDS
record() { # STATUS CHECK MESSAGE
	local took=$((SECONDS - STARTED))
	printf '%-4s  %-21s  %-26s %4ss  %s\n' "$1" "$WHO" "$2" "$took" "$3" >>"$RESULTS"
	printf '==> %s: %s (%ss) %s\n\n' "$2" "$1" "$took" "$3"
	STARTED=$SECONDS
}

# The line of OUT that says why a command failed: dockless's own error line, else the last line.
why() {
	local line
	line=$(grep -E -m1 'dockless: error|Error:|error:' "$OUT" || true)
	[[ -n $line ]] || line=$(grep -v '^\s*$' "$OUT" | tail -n 1)
	printf '%s' "${line:0:400}"
}

# run CHECK CMD...: run CMD (timeout 300 s) with its output in OUT (and shown); set RC.
run() {
	local check=$1
	shift
	printf -- '--- %s: %s\n' "$check" "$*"
	timeout -k 5 300 "$@" >"$OUT" 2>&1
	RC=$?
	sed 's/^/    /' "$OUT"
	printf -- '--- exit %s\n' "$RC"
}

# check CHECK CMD...: passes when CMD exits 0.
check() {
	local name=$1
	run "$@"
	if ((RC == 0)); then record PASS "$name" ""; else record FAIL "$name" "exit $RC: $(why)"; fi
}

# json_field NAME: the value of a top-level field of the --json result in OUT.
json_field() {
	grep -E -o "\"$1\": *[^,}]*" "$OUT" | head -n 1 | sed -E 's/^[^:]*: *//'
}

facts() {
	echo "### facts ($WHO)"
	echo "kernel: $(uname -r)"
	echo "id: $(id)"
	echo "cgroup fs: $(stat -fc %T /sys/fs/cgroup)"
	echo "own cgroup: $(cat /proc/self/cgroup)"
	echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
	local own
	own=$(sed -n 's/^0:://p' /proc/self/cgroup)
	echo "own cgroup's dir: $(stat -c '%U:%G %a' "/sys/fs/cgroup$own" 2>/dev/null), subtree_control of its parent: $(cat "/sys/fs/cgroup${own%/*}/cgroup.subtree_control" 2>/dev/null)"
	echo "own cgroup's controllers: $(cat "/sys/fs/cgroup$own/cgroup.controllers" 2>/dev/null); processes in it: $(wc -l <"/sys/fs/cgroup$own/cgroup.procs" 2>/dev/null)"
	local tu um
	tu=$(id -u "$TEST_USER")
	um=/sys/fs/cgroup/user.slice/user-$tu.slice/user@$tu.service
	echo "user manager's cgroup: controllers [$(cat "$um/cgroup.controllers" 2>/dev/null)], subtree_control [$(cat "$um/cgroup.subtree_control" 2>/dev/null)]; app.slice's: [$(cat "$um/app.slice/cgroup.controllers" 2>/dev/null)]"
	echo "XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-} DBUS_SESSION_BUS_ADDRESS=${DBUS_SESSION_BUS_ADDRESS:-}"
	echo
}

# The checks both root and the test user run.
common_checks() {
	check pull "$DOCKLESS" pull -q "$IMAGE"
	check "run true" "$DOCKLESS" run "$IMAGE" -- true

	run "run echo" "$DOCKLESS" run "$IMAGE" -- echo hello-from-the-guest
	if ((RC == 0)) && grep -qx hello-from-the-guest "$OUT"; then
		record PASS "run echo" ""
	else
		record FAIL "run echo" "exit $RC: $(why)"
	fi

	# Issue 12: every fallback (mount API, cgroup manager) named in DOCKLESS_LOG=debug.
	run "debug log" env DOCKLESS_LOG=debug "$DOCKLESS" run "$IMAGE" -- true
	local notes
	notes=$(grep -i -E 'overlay|mount|fsconfig|legacy|cgroup' "$OUT" | head -n 8 | cut -c1-200 | tr '\n' '|')
	if ((RC != 0)); then
		record FAIL "debug names fallbacks" "exit $RC: $(why)"
	elif [[ -z $notes ]]; then
		record FAIL "debug names fallbacks" "no debug line names the mount API or the cgroup manager ($(wc -l <"$OUT") lines)"
	else
		record PASS "debug names fallbacks" "${notes:0:400}"
	fi

	# Issue 12: the run's --json names the mount API and the cgroup manager; which ones this
	# guest must take: systemd (PID 1 is systemd, cgroup v2), fsconfig from Linux 6.8 on.
	run "json names APIs" "$DOCKLESS" run --json "$IMAGE" -- true
	local api manager want_api
	api=$(json_field mount_api)
	manager=$(json_field cgroup_manager)
	want_api='"mount(2)"'
	if printf '%s\n6.8\n' "$(uname -r | cut -d- -f1)" | sort -V -C -r; then want_api='"fsconfig"'; fi
	if ((RC == 0)) && [[ $api == "$want_api" && $manager == '"systemd"' ]]; then
		record PASS "json names APIs" "mount_api $api, cgroup_manager $manager"
	else
		record FAIL "json names APIs" "exit $RC, mount_api ${api:-?} (want $want_api), cgroup_manager ${manager:-?} (want \"systemd\"): $(why)"
	fi

	# An image of 60 layers: over a page of legacy overlay options with the store's paths.
	check "pull 60 layers" "$DOCKLESS" pull -q "$LAYERS60"
	run "run 60 layers" "$DOCKLESS" run "$LAYERS60" -- sh -c 'cat /layers/2 /layers/60; ls /layers | wc -l'
	if ((RC == 0)) && [[ $(tr -d ' ' <"$OUT" | tr '\n' ' ') == "2 60 59 " ]]; then
		record PASS "run 60 layers" ""
	else
		record FAIL "run 60 layers" "exit $RC, output $(tr '\n' ' ' <"$OUT" | cut -c1-200)"
	fi

	# ~200 MB in a shell variable against a 32 MiB limit.
	run "memory 32m OOM" "$DOCKLESS" run --json --memory 32m "$IMAGE" -- \
		sh -c 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo ${#x}'
	local oom peak
	oom=$(json_field oom_killed)
	peak=$(json_field peak_memory_bytes)
	if [[ $oom == true ]]; then
		record PASS "memory 32m OOM" "exit $RC, peak_memory_bytes $peak"
	else
		record FAIL "memory 32m OOM" "exit $RC, oom_killed ${oom:-?}, peak ${peak:-?}: $(why)"
	fi

	# 20 background sleeps against a limit of 8 processes.
	run "pids-limit 8" "$DOCKLESS" run --pids-limit 8 "$IMAGE" -- \
		sh -c 'i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i + 1)); done; wait'
	if grep -q -i "can't fork\|Resource temporarily unavailable" "$OUT"; then
		record PASS "pids-limit 8" "exit $RC, fork refused"
	else
		record FAIL "pids-limit 8" "exit $RC, no fork refused: $(why)"
	fi

	# The quota as the container's cgroup (or a parent below the root) has it, read from outside.
	printf -- '--- cpus 0.5: %s run --cpus 0.5 %s -- sleep 9 &\n' "$DOCKLESS" "$IMAGE"
	"$DOCKLESS" run --cpus 0.5 "$IMAGE" -- sleep 9 >"$OUT" 2>&1 &
	local runner=$! pid="" i cg quota="" container_cg=""
	for ((i = 0; i < 120; i++)); do
		pid=$(pgrep -n -x -f 'sleep 9') && break
		kill -0 "$runner" 2>/dev/null || break
		sleep 0.5
	done
	if [[ -n $pid ]]; then
		cg=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
		container_cg=$cg
		echo "    container cgroup: $cg"
		while [[ -n $cg && $cg != / ]]; do
			quota=$(cat "/sys/fs/cgroup$cg/cpu.max" 2>/dev/null || true)
			[[ -n $quota && $quota != "max "* ]] && break
			quota=""
			cg=${cg%/*}
		done
	fi
	wait "$runner"
	RC=$?
	sed 's/^/    /' "$OUT"
	if [[ $quota == "50000 100000" ]]; then
		record PASS "cpus 0.5" "cpu.max $quota in $cg"
	elif [[ -z $pid ]]; then
		record FAIL "cpus 0.5" "exit $RC, the container never started: $(why)"
	else
		record FAIL "cpus 0.5" "exit $RC, no cpu.max quota on the container's cgroup path: $(why)"
	fi

	# systemd as cgroup manager: root's run in a transient scope of its own (podman's layout:
	# the helper in supervisor/, the container in container/), the rootless runner in one
	# delegated scope of the user's systemd.
	local want_cg='^/system\.slice/dockless-dl-[0-9a-f]+-[0-9]+-[0-9a-f]+\.scope/container$'
	((EUID == 0)) || want_cg="^/user\.slice/user-$EUID\.slice/user@$EUID\.service/.*dockless-[0-9]+\.scope/dockless/dl-[^/]+$"
	if [[ $container_cg =~ $want_cg ]]; then
		record PASS "systemd scope" "$container_cg"
	else
		record FAIL "systemd scope" "container cgroup '$container_cg' does not match $want_cg"
	fi

	local t0=$SECONDS
	run "timeout 2s" "$DOCKLESS" run --json --timeout 2s "$IMAGE" -- sh -c 'sleep 120 & sleep 120'
	local took=$((SECONDS - t0)) timed_out
	timed_out=$(json_field timed_out)
	if [[ $timed_out == true ]] && ((took < 60)); then
		record PASS "timeout 2s" "returned after ${took}s"
	else
		record FAIL "timeout 2s" "exit $RC after ${took}s, timed_out ${timed_out:-?}: $(why)"
	fi

	# A runner SIGKILLed with its container running, then gc.
	printf -- '--- gc after SIGKILL: %s run %s -- sleep 300 &\n' "$DOCKLESS" "$IMAGE"
	"$DOCKLESS" run "$IMAGE" -- sleep 300 >"$OUT" 2>&1 &
	local runner=$! i
	for ((i = 0; i < 120; i++)); do
		pgrep -x -f 'sleep 300' >/dev/null && break
		kill -0 "$runner" 2>/dev/null || break
		sleep 0.5
	done
	if ! pgrep -x -f 'sleep 300' >/dev/null; then
		kill -KILL "$runner" 2>/dev/null
		wait "$runner" 2>/dev/null
		record FAIL "gc after SIGKILL" "the container never started: $(why)"
	else
		kill -KILL "$runner"
		wait "$runner" 2>/dev/null
		run "gc after SIGKILL" "$DOCKLESS" gc
		sleep 1
		if ((RC == 0)) && ! pgrep -x -f 'sleep 300' >/dev/null; then
			record PASS "gc after SIGKILL" ""
		else
			record FAIL "gc after SIGKILL" "gc exit $RC, container processes left: $(pgrep -a -x -f 'sleep 300' | tr '\n' ' ') $(why)"
		fi
	fi

	demo_job

	check "gc" "$DOCKLESS" gc
	leftovers
}

# The demo Keboola job end to end: a table staged in from the embedded Storage, the component,
# its two output tables loaded back (examples/demo-component, data from the share).
demo_job() {
	local dir
	dir=$(mktemp -d /tmp/smoke-job.XXXXXX)
	printf '%s\n' '{"storage": {"input": {"tables": [{"source": "in.c-demo.orders", "destination": "orders.csv"}]}},' \
		' "parameters": {"vat_rate": 0.21, "keep_state": false}}' >"$dir/job.json"
	run "storage import" "$DOCKLESS" --storage "$dir/job.db" storage import \
		"$SHARE/orders-1.csv" in.c-demo.orders --primary-key id
	run "demo job" "$DOCKLESS" --storage "$dir/job.db" run "$DEMO" --config "$dir/job.json" \
		--config-id guest --json
	local status tables
	status=$(json_field status)
	tables=$(grep -c '"destination"' "$OUT")
	if ((RC == 0)) && [[ $status == '"success"' ]] && ((tables >= 2)); then
		record PASS "demo job" "status $status, $tables tables written"
	else
		record FAIL "demo job" "exit $RC, status ${status:-?}, $tables tables: $(why)"
	fi
	rm -rf "$dir"
}

# Root: the runner and its runtime helper both SIGKILLed, so nobody ends the container: it goes
# on in its scope until `dockless gc` kills it through the cgroup; systemd then removes the scope.
gc_after_both_killed() {
	printf -- '--- gc after SIGKILL of both: %s run %s -- sleep 300 &\n' "$DOCKLESS" "$IMAGE"
	"$DOCKLESS" run "$IMAGE" -- sleep 300 >"$OUT" 2>&1 &
	local runner=$! i helper scope
	for ((i = 0; i < 120; i++)); do
		pgrep -x -f 'sleep 300' >/dev/null && break
		sleep 0.5
	done
	helper=$(pgrep -P "$runner" | head -n 1)
	kill -KILL "$runner" ${helper:+"$helper"}
	wait "$runner" 2>/dev/null
	sleep 1
	scope=$(systemctl list-units --all --plain --no-legend 'dockless-*' | cut -d' ' -f1 | tr '\n' ' ')
	if ! pgrep -x -f 'sleep 300' >/dev/null || [[ -z $scope ]]; then
		record FAIL "gc after both killed" "expected the container alive in its scope: container [$(pgrep -a -x -f 'sleep 300')], scope [$scope], helper [$helper]"
		return
	fi
	echo "    left running: container $(pgrep -x -f 'sleep 300'), scope $scope"
	run "gc after both killed" "$DOCKLESS" gc
	local left=""
	for ((i = 0; i < 50; i++)); do
		left=$(pgrep -a -x -f 'sleep 300')$(systemctl list-units --all --plain --no-legend 'dockless-*' | cut -d' ' -f1)
		[[ -n $left ]] || break
		sleep 0.1
	done
	if ((RC == 0)) && [[ -z $left ]]; then
		record PASS "gc after both killed" "scope $scope removed"
	else
		record FAIL "gc after both killed" "gc exit $RC, left: $left $(why)"
	fi
}

# What a finished run may not leave: mounts, processes, container cgroups, state entries. And,
# reported apart (issue 12), a cgroup tree of dockless's own beside systemd's.
leftovers() {
	local mounts procs containers top state="" d
	mounts=$(grep dockless /proc/mounts | cut -d' ' -f2 | tr '\n' ' ')
	procs=$(pgrep -a -x -f 'sleep (2|9|120|300)' | tr '\n' ' ')
	# systemd removes an emptied scope (and what it delegated) a moment after its last process.
	local tries
	for ((tries = 0; tries < 50; tries++)); do
		containers=$(find /sys/fs/cgroup -mindepth 2 -type d -path '*dockless*' 2>/dev/null | head -n 5 | tr '\n' ' ')
		((EUID != 0)) || containers+=$(systemctl list-units --all --plain --no-legend 'dockless-*' | cut -d' ' -f1 | tr '\n' ' ')
		[[ -n $containers ]] || break
		sleep 0.1
	done
	top=$(find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d -name '*dockless*' | tr '\n' ' ')
	local root=/var/lib/dockless run_state=/run/dockless
	if ((EUID != 0)); then
		root=${XDG_DATA_HOME:-$HOME/.local/share}/dockless
		run_state=${XDG_RUNTIME_DIR:-/nonexistent}/dockless
	fi
	for d in "$run_state/containers-v1/containers" "$run_state/containers-v1/runs" "$root/jobs-v1" \
		"$root/rootfs-v1"; do
		[[ -d $d ]] || continue
		if [[ -n $(find "$d" -mindepth 1 -maxdepth 1) ]]; then
			state+="$d: $(find "$d" -mindepth 1 -maxdepth 1 -printf '%f ' | cut -c1-200)"
		fi
	done
	printf -- '--- leftovers: mounts [%s], processes [%s], cgroups [%s], top-level [%s], state [%s]\n' \
		"$mounts" "$procs" "$containers" "$top" "$state"
	if [[ -z $mounts$procs$containers$state ]]; then
		record PASS "no leftovers" ""
	else
		record FAIL "no leftovers" "mounts [$mounts] processes [$procs] cgroups [$containers] state [$state]"
	fi
	if [[ -z $top ]]; then
		record PASS "no cgroup beside systemd" ""
	else
		record FAIL "no cgroup beside systemd" "$top (left after the runs, beside systemd's slices)"
	fi
	echo
}

# `dockless build`: a component image from the test busybox and a git repository made here,
# with one build command run in a container (its changes become a layer), then run.
build_and_run() {
	local repo
	repo=$(mktemp -d /tmp/smoke-repo.XXXXXX)
	printf '#!/bin/sh\necho "built in the guest: $(cat /home/step.txt)"\n' >"$repo/main.sh"
	git -C "$repo" init -q -b main &&
		git -C "$repo" -c user.name=t -c user.email=t@example.com add . &&
		git -C "$repo" -c user.name=t -c user.email=t@example.com commit -qm component
	run "build" "$DOCKLESS" build --base "$IMAGE" --repo "$repo" --ref HEAD \
		--command 'echo step-ran > /home/step.txt' --entrypoint '/bin/sh /home/main.sh' \
		--tag "guest-built-$WHO:1"
	if ((RC != 0)); then
		record FAIL "build" "exit $RC: $(why)"
		rm -rf "$repo"
		return
	fi
	record PASS "build" "$(grep -m1 "guest-built" "$OUT" | cut -c1-120)"
	run "run the built image" "$DOCKLESS" run "guest-built-$WHO:1"
	if ((RC == 0)) && grep -q 'built in the guest: step-ran' "$OUT"; then
		record PASS "run the built image" ""
	else
		record FAIL "run the built image" "exit $RC: $(why)"
	fi
	rm -rf "$repo"
}

root_part() {
	: >"$RESULTS"
	chmod 0666 "$RESULTS"
	facts
	echo "systemd: $(systemctl --version | head -n 1); PID 1: $(cat /proc/1/comm); system $(systemctl is-system-running)"
	echo
	install -m 0755 "$SHARE/bin/dockless" "$DOCKLESS"
	echo "dockless: $("$DOCKLESS" --version 2>&1)"
	echo

	# What a host without podman's files gets.
	local profile=/usr/share/containers/seccomp.json
	check pull "$DOCKLESS" pull -q "$IMAGE"
	if [[ -e $profile ]]; then
		record FAIL "no seccomp.json" "the image has $profile; this check needs a host without it"
	else
		check "run w/o seccomp.json" "$DOCKLESS" run "$IMAGE" -- true
	fi
	if [[ -f $SHARE/seccomp.json ]]; then
		mkdir -p "${profile%/*}"
		install -m 0644 "$SHARE/seccomp.json" "$profile"
		echo "installed $profile from the host for the following checks"
	fi

	common_checks

	gc_after_both_killed

	run "run --userns id" "$DOCKLESS" run --userns "$IMAGE" -- id
	if ((RC == 0)) && grep -q 'uid=0(root)' "$OUT"; then
		record PASS "run --userns" ""
	else
		record FAIL "run --userns" "exit $RC: $(why)"
	fi
	build_and_run
	leftovers
	echo "kernel messages of the runs (counted):"
	dmesg | grep -i -E 'overlay|oom-kill|clone' | sed -E 's/^\[[ 0-9.]+\] //; s#/var/lib/dockless/[^" ]*#<store path>#g' |
		sort | uniq -c | sort -rn | head -n 8
	echo

	# The test user, as a login would make it (a session-N.scope of logind, not delegated).
	echo "### rootless: runuser -l $TEST_USER (login session)"
	SMOKE_RESULTS=$RESULTS GUEST_SHARE=$SHARE runuser -l "$TEST_USER" -w SMOKE_RESULTS,GUEST_SHARE \
		-c "bash '$SHARE/run' rootless session" 2>&1
	# The test user in a service of its own systemd: delegated (user@1000.service has Delegate=yes).
	echo "### rootless: systemd-run --user as $TEST_USER (delegated user service)"
	local uid
	uid=$(id -u "$TEST_USER")
	runuser -u "$TEST_USER" -- env XDG_RUNTIME_DIR="/run/user/$uid" \
		DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" \
		systemd-run --user --quiet --wait --pipe --collect -p Delegate=yes \
		--setenv=SMOKE_RESULTS="$RESULTS" --setenv=GUEST_SHARE="$SHARE" \
		bash "$SHARE/run" rootless user-service 2>&1 </dev/null
	echo "systemd-run exit $?"
	echo
	WHO=root
	delegated_v2


	echo "### summary ($(uname -r))"
	cat "$RESULTS"
	[[ -z ${GUEST_OUT:-} ]] || cp "$RESULTS" "$GUEST_OUT/results.txt"
	! grep -q '^FAIL' "$RESULTS"
}

# `dockless delegate-cgroups USER`'s form for cgroup v2 hosts without systemd, tried with the
# cgroupfs manager: root makes the delegated cgroup, a root shell moves itself in and becomes the
# test user (setpriv execs, so the runner is alone there), the runner enables the controllers
# below it, and a 32 MiB limit OOM-kills; --undo removes the tree.
delegated_v2() {
	local uid gid dir script
	uid=$(id -u "$TEST_USER")
	gid=$(id -g "$TEST_USER")
	dir=/sys/fs/cgroup/dockless-u$uid
	check "delegate-cgroups v2" "$DOCKLESS" delegate-cgroups "$TEST_USER"
	script=$(mktemp /tmp/delegated.XXXXXX)
	cat >"$script" <<-EOF
		cd / && echo \$\$ >$dir/cgroup.procs || exit 99
		exec setpriv --reuid=$uid --regid=$gid --init-groups env -i HOME=/home/$TEST_USER \\
			PATH=$PATH XDG_RUNTIME_DIR=/run/user/$uid DOCKLESS_INSECURE_REGISTRIES=$REG \\
			DOCKLESS_LOG=dockless=debug $DOCKLESS --cgroup-manager cgroupfs run --json \\
			--memory 32m $IMAGE -- sh -c 'x=\$(head -c 200000000 /dev/zero | tr "\\0" a); echo \${#x}'
	EOF
	run "delegated v2 OOM" sh "$script"
	rm -f "$script"
	local oom manager
	oom=$(json_field oom_killed)
	manager=$(json_field cgroup_manager)
	if [[ $oom == true && $manager == '"cgroupfs"' ]]; then
		record PASS "delegated v2 OOM" "exit $RC, cgroup_manager $manager"
	else
		record FAIL "delegated v2 OOM" "exit $RC, oom_killed ${oom:-?}, cgroup_manager ${manager:-?}: $(why)"
	fi
	check "delegate-cgroups --undo" "$DOCKLESS" delegate-cgroups --undo "$TEST_USER"
	if [[ -e $dir ]]; then
		record FAIL "undo removed it" "$dir is still there: $(find "$dir" -type d | tr '\n' ' ')"
	else
		record PASS "undo removed it" ""
	fi
}

rootless_part() {
	WHO="rootless-$1"
	facts
	common_checks
	build_and_run
	if [[ $1 == user-service ]]; then
		# Why a Delegate=yes user service alone gave no controllers (issue 12): with cgroupfs,
		# the session claims the service's own cgroup, where the shell running this script
		# stays; v2 refuses controllers beside a process (EBUSY), so the limit is not enforced.
		run "cgroupfs in a service" env DOCKLESS_LOG=dockless_runtime=debug "$DOCKLESS" \
			--cgroup-manager cgroupfs run --memory 32m "$IMAGE" -- true
		local busy
		busy=$(grep -m1 'cannot enable a delegated controller' "$OUT" | grep -o 'error=.*' | cut -c1-120)
		if ((RC == 0)) && [[ $busy == *busy* ]] && grep -q 'not enforced: memory limit' "$OUT"; then
			record PASS "cgroupfs in a service" "$busy"
		else
			record FAIL "cgroupfs in a service" "exit $RC, ${busy:-no EBUSY logged}: $(why)"
		fi
	fi
	# What the user's state holds after gc.
	local data=${XDG_DATA_HOME:-$HOME/.local/share}
	find "$data" -maxdepth 3 2>/dev/null | head -n 20 | sed 's/^/    state: /'
}

case ${1:-root} in
root) root_part ;;
rootless) rootless_part "${2:?rootless needs WHO}" ;;
*) echo "usage: smoke.sh [root|rootless WHO]" >&2 && exit 2 ;;
esac
rc=$?
rm -f "$OUT"
exit $rc
