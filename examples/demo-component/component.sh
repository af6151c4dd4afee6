#!/bin/sh
# The demo component: a Keboola component in busybox sh + awk.
#
# Reads in/tables/orders.csv (id, customer, amount), processes only the orders it has not seen
# (state: last_id), and writes
#   out/tables/orders_enriched.csv   new orders with amount_with_vat   (PK id, incremental)
#   out/tables/customer_totals.csv   running totals of the customers of these orders
#                                    (PK customer, incremental: an upsert)
#   out/files/summary.txt            a short report, tagged
#   out/state.json                   last_id, runs and the running totals
#
# Parameters: vat_rate (default 0.21); #api_token (a secret: printed to show the redaction);
# simulate = user-error | application-error | oom | timeout | hostile-links (after writing the
# outputs) to see how the runner classifies failures; keep_state = false to skip writing the state. A sync
# action (any action but `run`) prints a JSON answer (with simulate = bad-answer: plain text).
set -eu

data=${KBC_DATADIR:-/data/}
config="$data/config.json"
[ -f "$config" ] || { echo "config.json not found in $data" >&2; exit 2; }

# One value of a flat JSON document (string, number or boolean), by key; empty when absent.
json_value() {
	awk -v key="$1" '
		{ doc = doc $0 }
		END {
			if (match(doc, "\"" key "\" *: *(\"([^\"\\\\]|\\\\.)*\"|[-0-9.eE+]+|true|false)")) {
				v = substr(doc, RSTART, RLENGTH)
				sub("^\"" key "\" *: *", "", v)
				gsub(/^"|"$/, "", v)
				print v
			}
		}' "$2"
}

action=$(json_value action "$config")
if [ "${action:-run}" != run ]; then
	[ "$(json_value simulate "$config")" = bad-answer ] && { echo "this is not JSON"; exit 0; }
	# The answer names the KBC_* variables the runner set (never their values: one could be secret).
	kbc=$(env | grep '^KBC_' | cut -d= -f1 | sort | tr '\n' ' ')
	printf '{"status": "success", "action": "%s", "component": "%s", "datadir": "%s", "kbc": "%s"}\n' \
		"$action" "${KBC_COMPONENTID:-}" "${KBC_DATADIR:-}" "${kbc% }"
	exit 0
fi

vat_rate=$(json_value vat_rate "$config")
vat_rate=${vat_rate:-0.21}
token=$(json_value '#api_token' "$config")
simulate=$(json_value simulate "$config")
keep_state=$(json_value keep_state "$config")

state="$data/in/state.json"
last_id=$(json_value last_id "$state")
runs=$(json_value runs "$state")
totals=$(json_value totals "$state")
last_id=${last_id:-0}
runs=$(( ${runs:-0} + 1 ))

echo "demo component: run $runs, config ${KBC_CONFIGID:-?}, orders after id $last_id, VAT $vat_rate"
if [ -n "$token" ]; then
	# Two writes with a pause between: the runner gets the secret cut across two output chunks
	# and must still hide it.
	half=$((${#token} / 2))
	printf 'demo component: authenticating with token %s' "$(printf '%s' "$token" | cut -c1-"$half")"
	sleep 0.2
	printf '%s\n' "$(printf '%s' "$token" | cut -c"$((half + 1))"-)"
fi

input="$data/in/tables/orders.csv"
[ -f "$input" ] || { echo "input table orders.csv is missing: map a table to destination orders.csv" >&2; exit 1; }

out="$data/out/tables"
mkdir -p "$out" "$data/out/files"
# Keboola's input CSV: a header and every value quoted; the demo data has no commas in values.
awk -F, -v last="$last_id" -v vat="$vat_rate" -v totals="$totals" -v run="$runs" \
	-v enriched="$out/orders_enriched.csv" -v sums="$out/customer_totals.csv" \
	-v statef="$data/out/state.json" -v summary="$data/out/files/summary.txt" '
	function unq(s) { gsub(/"/, "", s); return s }
	BEGIN {
		n = split(totals, pairs, ";")
		for (i = 1; i <= n; i++) if (split(pairs[i], kv, "=") == 2) total[kv[1]] = kv[2]
		print "\"id\",\"customer\",\"amount\",\"amount_with_vat\",\"run\"" > enriched
		max = last + 0
	}
	NR == 1 {
		for (i = 1; i <= NF; i++) col[unq($i)] = i
		if (!("id" in col) || !("customer" in col) || !("amount" in col)) {
			print "orders.csv needs the columns id, customer and amount" > "/dev/stderr"
			bad = 1
			exit 1
		}
		next
	}
	{
		id = unq($col["id"]) + 0; c = unq($col["customer"]); a = unq($col["amount"]) + 0
		if (id <= last) next
		printf "\"%d\",\"%s\",\"%.2f\",\"%.2f\",\"%d\"\n", id, c, a, a * (1 + vat), run > enriched
		total[c] += a; touched[c] = 1; count++
		if (id > max) max = id
	}
	END {
		if (bad) exit 1
		print "\"customer\",\"total\"" > sums
		list = ""
		for (c in total) {
			if (c in touched) printf "\"%s\",\"%.2f\"\n", c, total[c] > sums
			list = list (list == "" ? "" : ";") c "=" sprintf("%.2f", total[c])
		}
		printf "{\"last_id\": %d, \"runs\": %d, \"totals\": \"%s\"}\n", max, run, list > statef
		printf "run %d: %d new orders, last id %d\n", run, count, max > summary
		printf "demo component: %d new orders (last id %d)\n", count, max
	}' "$input"

# Where the tables go and how: the manifests (a configuration mapping may override them).
cat >"$out/orders_enriched.csv.manifest" <<'JSON'
{"destination": "out.c-demo.orders_enriched", "primary_key": ["id"], "incremental": true}
JSON
cat >"$out/customer_totals.csv.manifest" <<'JSON'
{"destination": "out.c-demo.customer_totals", "primary_key": ["customer"], "incremental": true}
JSON
cat >"$data/out/files/summary.txt.manifest" <<'JSON'
{"tags": ["demo", "summary"]}
JSON

[ "$keep_state" = false ] && rm -f "$data/out/state.json"

case "${simulate:-}" in
"") ;;
user-error) echo "simulated user error: the orders do not add up" >&2; exit 1 ;;
application-error) echo "simulated crash" >&2; exit 2 ;;
oom) echo "allocating without bound"; awk 'BEGIN { s = "0123456789"; while (1) s = s s }' ;;
timeout) echo "sleeping past the timeout"; sleep 3600 ;;
# A hostile component: /data/in and /data/out become links to a host path (`link_target`),
# which the runner must never follow when it hands data to the next image.
hostile-links)
	target=$(json_value link_target "$config")
	rm -rf "$data/in" "$data/out"
	ln -s "$target" "$data/in"
	ln -s "$target" "$data/out"
	;;
*) echo "unknown simulate value: $simulate" >&2; exit 1 ;;
esac
