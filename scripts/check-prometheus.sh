#!/usr/bin/env bash
# `make lint`'s Prometheus checks, with Debian 12's promtool (scripts/promtool.sh): the alert rules
# roles/monitor installs, their unit tests (tests/promtool/), and a configuration rendered from
# roles/monitor's template for a sample inventory (every job, a webhook).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
promtool=scripts/promtool.sh
rules=(roles/monitor/files/etc/prometheus/rules.d/*.yml)
"$promtool" check rules "${rules[@]}"
"$promtool" test rules tests/promtool/*.test.yml

# The rendered configuration names the installed rules directory; here it points at the repository's.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  ansible localhost -m ansible.builtin.template \
  -a "src=roles/monitor/templates/etc/prometheus/prometheus.yml.j2 dest=$work/prometheus.yml mode=0644" \
  -e "@roles/monitor/defaults/main.yml" -e "@roles/monitor/vars/main.yml" \
  -e "@tests/promtool/sample-inventory.yml" -e "__monitor_rules_dir=$PWD/roles/monitor/files/etc/prometheus/rules.d" >/dev/null
"$promtool" check config "$work/prometheus.yml"
