#!/bin/sh
# The demo processor: a 1:1 processor in busybox sh + awk (contract §9). Copies in/tables and
# in/files to out/ with their manifests, optionally upper-casing one column of every table, and
# optionally adds a table listing what it saw.
#
# Parameters (its own config.json has only these; storage is empty):
#   upper_column  a column to upper-case in every table
#   log_table     write out/tables/<log_table>.csv (entry, component, saw_storage) with a
#                 manifest for out.c-demo.<log_table>
#   fail          true: exit 1 (a user error) after copying
#   bare_table    write out/tables/<bare_table>.csv without a manifest (its destination is then
#                 the component's default bucket)
# It says on stderr which network interfaces and data type support it got.
set -eu
data=${KBC_DATADIR:-/data/}
config="$data/config.json"

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

upper=$(json_value upper_column "$config")
log=$(json_value log_table "$config")
fail=$(json_value fail "$config")
bare=$(json_value bare_table "$config")
saw_storage=no
grep -q '"input"' "$config" && saw_storage=yes

# Keboola hands in/state.json to the main image only.
if [ -e "$data/in/state.json" ]; then state_visible=yes; else state_visible=no; fi

mkdir -p "$data/out/tables" "$data/out/files"
cp -a "$data/in/files/." "$data/out/files/"
for f in "$data"/in/tables/*; do
	[ -e "$f" ] || continue
	name=${f##*/}
	case $name in
	*.manifest) cp "$f" "$data/out/tables/$name" ;;
	*)
		if [ -n "$upper" ] && [ -f "$f" ]; then
			awk -F, -v OFS=, -v col="\"$upper\"" '
				NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; print; next }
				{ if (c) $c = toupper($c); print }' "$f" >"$data/out/tables/$name"
		else
			cp -a "$f" "$data/out/tables/$name"
		fi
		;;
	esac
done

if [ -n "$log" ]; then
	{
		echo '"entry","component","saw_storage"'
		for f in "$data"/in/tables/*; do
			[ -e "$f" ] && printf '"%s","%s","%s"\n' "${f##*/}" "${KBC_COMPONENTID:-}" "$saw_storage"
		done
	} >"$data/out/tables/$log.csv"
	printf '{"destination": "out.c-demo.%s", "primary_key": ["entry"]}\n' "$log" >"$data/out/tables/$log.csv.manifest"
fi
if [ -n "$bare" ]; then
	printf '"component"\n"%s"\n' "${KBC_COMPONENTID:-}" >"$data/out/tables/$bare.csv"
fi
echo "demo processor ${KBC_COMPONENTID:-}: copied $(ls "$data/in/tables" | wc -l) table entries"
[ "$fail" = true ] && { echo "demo processor: failing as asked" >&2; exit 1; }
echo "demo processor: interfaces: $(ls /sys/class/net | tr '\n' ' '); data types: ${KBC_DATA_TYPE_SUPPORT:-}" >&2
echo "demo processor: state visible: $state_visible" >&2
exit 0
