#!/usr/bin/env bash
# The walls of docs/architecture.md that the build can hold:
#   1. the domain crate does no I/O: no I/O crate in its dependency tree
#      (tokio may come with cqrs-es, but without mio, its I/O driver);
#   2. projections/ never depends on the accountable crate;
#   3. only the store (src/store) reads or writes the events and snapshots
#      tables (migrations, which define them, aside);
#   4. the relay, the state publisher, the mailer and the event store never
#      import the GraphQL or HTTP layers;
#   5. GraphQL reaches Kafka only through its subscriptions' feed, which
#      reads the store: nothing under src/graphql imports rdkafka.
set -euo pipefail
cd "$(dirname "$0")/.."
failed=0
fail() { printf 'wall broken: %s\n' "$*" >&2; failed=1; }

domain="$(cargo tree --locked -p accountable-domain -e normal --prefix none)"
for crate in sqlx postgres-es tokio-postgres rdkafka axum hyper reqwest async-graphql \
  mio socket2 tower lettre accountable-vault accountable-projections; do
  if grep -q "^$crate v" <<<"$domain"; then
    fail "accountable-domain depends on $crate"
  fi
done

if cargo tree --locked -p accountable-projections -e normal --prefix none | grep -q '^accountable v'; then
  fail "accountable-projections depends on the accountable crate"
fi

if grep -rnE '\b(FROM|INTO|UPDATE|JOIN)\s+(events|snapshots)\b' src projections/src vault/src domain/src \
  | grep -v '^src/store/'; then
  fail "only src/store may read or write the events and snapshots tables"
fi

if grep -rnE 'crate::(graphql|http|graphiql)' src/relay.rs src/state.rs src/kafka.rs src/mail src/store src/commands src/events.rs; then
  fail "the relay, state publisher, mailer, store or command service imports the GraphQL or HTTP layer"
fi

if grep -rnE 'rdkafka|crate::kafka' src/graphql; then
  fail "the GraphQL layer talks to Kafka"
fi

exit "$failed"
