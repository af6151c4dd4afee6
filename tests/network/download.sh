#!/bin/sh
# Test component of tests/network: downloads a table from the test's "outside" server (by
# name, through --network bridge) into out/tables for the output mapping to load.
set -eu
wget -qO /data/out/tables/downloaded.csv http://outside.test:8080/table.csv
echo "downloaded $(wc -l < /data/out/tables/downloaded.csv) lines"
