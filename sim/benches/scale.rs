//! Placeholder; replaced by the scale benchmark.
fn main() {}
