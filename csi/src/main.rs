//! The `ferrofluid-csi` binary.
fn main() {}
