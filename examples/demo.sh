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
