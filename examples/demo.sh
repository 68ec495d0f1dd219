#!/usr/bin/env bash
# The main job end to end on the embedded defaults (outbox folder, local Maildir, SQLite):
# no server needed. Runs in a fresh temporary folder; pass a folder to keep it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
outreach="${OUTREACH:-$here/../.venv/bin/outreach}"
demo="${1:-$(mktemp -d)/campaign}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "outreach init $demo"
"$outreach" init "$demo"
cd "$demo"

step "outreach import prospects.csv (two rows are bad on purpose)"
"$outreach" import "$here/prospects.csv" || true

step "outreach prospects --icp cfo-manufacturing"
"$outreach" prospects --icp cfo-manufacturing

step "outreach enroll referral"
"$outreach" enroll referral

step "outreach check (renders every step's template for every enrolled prospect)"
"$outreach" check

step "outreach preview ava.nguyen@northwind-castings.example (the exact bytes that will go out)"
"$outreach" preview ava.nguyen@northwind-castings.example | tr -d '\r'

step "outreach send --ignore-window (into the outbox/ folder: no SMTP server needed)"
"$outreach" send --ignore-window

step "one message from outbox/"
ls outbox | head -3
tr -d '\r' < "$(ls outbox/*.eml | head -1)"

step "outreach send again: nothing goes twice"
"$outreach" send --ignore-window

step "outreach calls --hour (the next power hour: one persona, each call with its script)"
"$outreach" calls --hour

step "outreach call ID --outcome meeting (the first call of the hour books a meeting)"
first="$("$outreach" calls --hour --json | python3 -c 'import json, sys; t = json.load(sys.stdin)[0]; print(t["id"], t["email"])')"
"$outreach" call "${first% *}" --outcome meeting --note "demo: Tuesday 10am"
"$outreach" status "${first#* }"

step "outreach calls --format ics > calls.ics (the rest of the list, for a calendar app)"
"$outreach" calls --format ics > calls.ics
tr -d '\r' < calls.ics | sed -n 1,16p
echo "... $(grep -c BEGIN:VEVENT calls.ics) calls in calls.ics"
