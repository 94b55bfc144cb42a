#[test]
fn schema_graphql_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists");
    assert!(
        committed == accountable::graphql::sdl(),
        "schema.graphql differs from the code; regenerate it with `cargo run -- schema > schema.graphql`"
    );
}
