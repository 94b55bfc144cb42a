#!/usr/bin/env bash
# Fetches the GraphiQL page's scripts and styles from the npm registry into
# assets/graphiql, where the binary embeds them (src/graphiql.rs). Run it
# only to change versions; then update VERSION in src/graphiql.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
GRAPHIQL=3.8.3 REACT=18.3.1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null)
for package in "graphiql-$GRAPHIQL" "react-$REACT" "react-dom-$REACT"; do
  mkdir -p "$work/$package" && tar xzf "$work/$package.tgz" -C "$work/$package"
done
out=assets/graphiql
mkdir -p "$out"
cp "$work/graphiql-$GRAPHIQL/package/graphiql.min.js" "$work/graphiql-$GRAPHIQL/package/graphiql.min.css" "$out/"
cp "$work/graphiql-$GRAPHIQL/package/LICENSE" "$out/LICENSE.graphiql"
cp "$work/react-$REACT/package/umd/react.production.min.js" "$out/"
cp "$work/react-$REACT/package/LICENSE" "$out/LICENSE.react"
cp "$work/react-dom-$REACT/package/umd/react-dom.production.min.js" "$out/"
echo "vendored GraphiQL $GRAPHIQL and React $REACT into $out"
