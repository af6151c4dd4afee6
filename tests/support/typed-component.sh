#!/bin/sh
# A component with typed tables, in busybox sh, for the native data types tests
# (tests/cli/types.rs); built like the demo component (examples/demo-component/build-image).
#
# Always: writes out/files/data-type-support.txt (its KBC_DATA_TYPE_SUPPORT, `unset` when
# missing) and copies every input table manifest to out/files/seen-<name>.json, so a test
# reads what the component saw from Storage.
# Parameter `form`: schema (out.c-types.orders in the native-types form), legacy (the same
# table as columns + KBC.datatype.* column metadata), bad-type (a base type Keboola does not
# have); absent: no table.
set -eu
data=${KBC_DATADIR:-/data/}
config="$data/config.json"

form=$(awk '{ doc = doc $0 } END {
	if (match(doc, /"form" *: *"[^"]*"/)) { v = substr(doc, RSTART, RLENGTH); sub(/^"form" *: *"/, "", v); sub(/"$/, "", v); print v }
}' "$config")

out="$data/out"
mkdir -p "$out/tables" "$out/files"
printf '%s\n' "${KBC_DATA_TYPE_SUPPORT-unset}" >"$out/files/data-type-support.txt"
for m in "$data"/in/tables/*.manifest; do
	[ -e "$m" ] || continue
	cp "$m" "$out/files/seen-$(basename "$m" .manifest).json"
done

case "$form" in
"") exit 0 ;;
schema | bad-type)
	amount=NUMERIC
	[ "$form" = bad-type ] && amount=MONEY
	printf '1,10.50,true\n2,3.00,false\n' >"$out/tables/orders.csv"
	cat >"$out/tables/orders.csv.manifest" <<JSON
{"destination": "out.c-types.orders", "incremental": true, "schema": [
  {"name": "id", "primary_key": true, "nullable": false,
   "data_type": {"base": {"type": "INTEGER"}, "snowflake": {"type": "NUMBER", "length": "38,0"}}},
  {"name": "amount", "description": "gross amount",
   "data_type": {"base": {"type": "$amount", "length": "12,2", "default": "0"}}},
  {"name": "paid", "data_type": {"base": {"type": "BOOLEAN"}}}
]}
JSON
	;;
legacy)
	printf '1,10.50,true\n' >"$out/tables/orders.csv"
	cat >"$out/tables/orders.csv.manifest" <<'JSON'
{"destination": "out.c-types.orders", "columns": ["id", "amount", "paid"], "primary_key": ["id"],
 "column_metadata": {
   "id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"}, {"key": "KBC.datatype.nullable", "value": "0"}],
   "amount": [{"key": "KBC.datatype.basetype", "value": "NUMERIC"}, {"key": "KBC.datatype.length", "value": "12,2"}],
   "paid": [{"key": "KBC.datatype.basetype", "value": "BOOLEAN"}]}}
JSON
	;;
*)
	echo "unknown form: $form" >&2
	exit 2
	;;
esac
