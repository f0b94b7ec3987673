#!/bin/sh
# Policy evaluation per request: genpolicy's rules.rego + policy data vs allow-all.
# Usage: bash agent/benches/policy.sh [iterations]   (from the workspace root)
set -eu
cd "$(dirname "$0")/../.."
dir=../shared/fixtures/genpolicy
if [ ! -f "$dir/rules.rego" ]; then
    echo "SKIPPED: genpolicy's rules are read from $dir (upstream code, not copied): no ../shared here"
    # As the tests do: a skip is a failure under CI=true / COCOON_REQUIRE_ALL=1.
    if [ "${CI:-}" = true ] || [ "${COCOON_REQUIRE_ALL:-}" = 1 ]; then exit 1; fi
    exit 0
fi
exec cargo run -q --release -p cocoon-agent --example policy-bench -- "$dir" "${1:-2000}"
