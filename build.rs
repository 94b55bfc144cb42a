// The pages are embedded from web/dist (src/pages.rs): a new build of them
// must rebuild the crate, also when only file names changed.
fn main() {
    println!("cargo:rerun-if-changed=web/dist");
}
